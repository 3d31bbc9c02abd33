"""Every Prometheus metric Tabard exports, in one place. Labels never carry unbounded ids."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

HTTP_REQUESTS = Counter(
    "tabard_http_requests_total",
    "HTTP requests by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "tabard_http_request_duration_seconds",
    "HTTP request latency by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
DB_POOL_CHECKED_OUT = Gauge(
    "tabard_db_pool_checked_out", "Database connections in use.", registry=REGISTRY
)
DB_POOL_SIZE = Gauge("tabard_db_pool_size", "Database connection pool size.", registry=REGISTRY)
AUDIT_CHAIN_INTACT = Gauge(
    "tabard_audit_chain_intact",
    "1 when the last audit chain verification passed, 0 when it found a broken link.",
    registry=REGISTRY,
)
AUDIT_EVENTS_CHECKED = Gauge(
    "tabard_audit_events_checked",
    "Events checked by the last audit verification.",
    registry=REGISTRY,
)
AGENTS_REGISTERED = Counter(
    "tabard_agents_registered_total",
    "Agents registered, by deployment environment.",
    ["environment"],
    registry=REGISTRY,
)
DID_DOCUMENTS_SERVED = Counter(
    "tabard_did_documents_served_total",
    "DID documents served (agent documents, the registry's, and resolutions).",
    registry=REGISTRY,
)
CREDENTIALS_EXPIRING_SOON = Gauge(
    "tabard_credentials_expiring_soon",
    "Active credentials that expire within 7 days, by kind (client_credential, certificate).",
    ["kind"],
    registry=REGISTRY,
)
TOKENS_ISSUED = Counter(
    "tabard_tokens_issued_total",
    "Access tokens issued, by grant type (client_credentials, token_exchange).",
    ["grant_type"],
    registry=REGISTRY,
)
TOKEN_REQUESTS_DENIED = Counter(
    "tabard_token_requests_denied_total",
    "Token requests refused, by OAuth error code.",
    ["error"],
    registry=REGISTRY,
)
DELEGATION_CHAINS_CREATED = Counter(
    "tabard_delegation_chains_created_total",
    "Delegation chains started by a token exchange (RFC 8693).",
    registry=REGISTRY,
)
TOKENS_REVOKED = Counter(
    "tabard_tokens_revoked_total",
    "Revocations recorded, by kind (jti, chain, agent, client, org, kid, cert, ca, binding).",
    ["kind"],
    registry=REGISTRY,
)
RATE_LIMIT_HITS = Counter(
    "tabard_rate_limit_hits_total",
    "Requests refused by a rate limit, by limit (token_endpoint, api).",
    ["limit"],
    registry=REGISTRY,
)
TIER_LIMIT_REJECTIONS = Counter(
    "tabard_tier_limit_rejections_total",
    "Requests refused by a tier quota, by limit (api_calls_per_day, tokens_per_day, ...).",
    ["limit"],
    registry=REGISTRY,
)
HEARTBEATS_RECEIVED = Counter(
    "tabard_heartbeats_received_total",
    "Heartbeats accepted by this process (before they are coalesced).",
    registry=REGISTRY,
)
HEARTBEATS_AUDITED = Counter(
    "tabard_heartbeats_audited_total",
    "Heartbeats this process wrote an audit event for (the sampled share of those received).",
    registry=REGISTRY,
)
HEARTBEAT_FLUSH = Histogram(
    "tabard_heartbeat_flush_seconds",
    "How long writing one batch of coalesced heartbeats took.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
HEARTBEAT_FLUSH_ROWS = Histogram(
    "tabard_heartbeat_flush_rows",
    "Instances written by one heartbeat flush.",
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 50000),
    registry=REGISTRY,
)
HEARTBEAT_BUFFER = Gauge(
    "tabard_heartbeat_buffer_instances",
    "Instances whose latest heartbeat waits in this process's buffer for the next flush.",
    registry=REGISTRY,
)
REDIS_COMMANDS = Counter(
    "tabard_redis_commands_total",
    "Commands sent to the Redis key-value store.",
    registry=REGISTRY,
)
REDIS_ROUND_TRIPS = Counter(
    "tabard_redis_round_trips_total",
    "Round trips to the Redis key-value store: the commands of one event-loop step share one.",
    registry=REGISTRY,
)
EVENTS_PUBLISHED = Counter(
    "tabard_events_published_total",
    "Outbox events the relay published to the bus.",
    registry=REGISTRY,
)
EVENTS_RELAY_LAG = Gauge(
    "tabard_events_relay_lag_seconds",
    "Age of the oldest event in the relay's last batch when it was published (0 when idle).",
    registry=REGISTRY,
)
WEBHOOK_ATTEMPTS = Counter(
    "tabard_webhook_attempts_total",
    "Webhook delivery attempts, by outcome (succeeded, failed).",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_DEAD_LETTERS = Counter(
    "tabard_webhook_dead_letters_total",
    "Webhook deliveries that exhausted their attempts, by event type.",
    ["event_type"],
    registry=REGISTRY,
)
WEBHOOK_LATENCY = Histogram(
    "tabard_webhook_response_seconds",
    "How long receivers took to answer a webhook.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
