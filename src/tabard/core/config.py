"""Typed configuration from `TABARD_*` environment variables (and an optional `.env`).

Built once by `load_settings()` and passed down; nothing else reads the environment.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "TABARD_"
MIN_PRODUCTION_SECRET_LENGTH = 32
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
DEFAULT_TIER_AGENT_LIMITS: dict[str, int | None] = {"free": 10, "pro": 1000, "enterprise": None}


class ConfigError(Exception):
    """Start-up configuration is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _choice(value: str, allowed: tuple[str, ...]) -> str:
    normalized = value.strip().lower()
    if normalized not in allowed:
        raise ValueError(f"unsupported value {value!r} ({'|'.join(allowed)})")
    return normalized


class Settings(BaseSettings):
    """Every setting of a Tabard process. See docs/configuration.md for the operator's view."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", validate_default=True
    )

    env: str = "development"
    data_dir: Path = Path(".tabard")
    public_url: str = "http://127.0.0.1:8080"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)

    database_backend: str = ""
    database_url: str = ""
    database_pool_size: int = Field(default=10, ge=1, le=500)
    database_pgbouncer: bool = False

    kv_backend: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    bus_backend: str = "memory"
    nats_url: str = "nats://127.0.0.1:4222"
    bus_stream: str = "TABARD"
    # The stream's subjects are `<prefix>.>`: deployments sharing a NATS account need their own.
    bus_subjects_prefix: str = Field(default="tabard", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    # Age limit of a JetStream stream Tabard creates (0: none); an existing stream keeps its own.
    bus_stream_max_age_seconds: int = Field(default=7 * 86400, ge=0)

    admin_secret: SecretStr | None = None
    secret_key: SecretStr | None = None
    master_key: SecretStr | None = None
    metrics_token: SecretStr | None = None

    log_format: str = "json"
    log_level: str = "info"
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Token service: access-token lifetime (orgs may choose their own within
    # [60, access_token_max_lifetime_seconds]), delegation depth, DPoP and mTLS binding.
    access_token_lifetime_seconds: int = Field(default=900, ge=60, le=86400)
    delegation_max_depth: int = Field(default=3, ge=1, le=10)
    dpop_nonce_required: bool = False
    # A client certificate forwarded by a TLS-terminating proxy (URL-encoded PEM, as nginx's
    # $ssl_client_escaped_cert), believed only from these proxy addresses (IPs or CIDRs).
    mtls_client_cert_header: str = ""
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # How long a replica trusts its revocation cache before catching up with the database.
    revocation_sync_seconds: float = Field(default=5, gt=0, le=300)
    # Agents an org may hold (not decommissioned) by tier; null means unlimited.
    # JSON, e.g. {"free": 25}; tiers left out keep their defaults.
    tier_agent_limits: dict[str, int | None] = Field(
        default_factory=lambda: dict(DEFAULT_TIER_AGENT_LIMITS)
    )
    credential_expiry_check_interval_seconds: float = Field(default=60, gt=0)
    # Rate limits (GCRA): a sustained rate per second and how many requests may come at once.
    # A rate of 0 turns the limit off. Token endpoint: per client; API: per principal.
    token_rate_limit_per_second: float = Field(default=10, ge=0)
    token_rate_limit_burst: int = Field(default=20, ge=1)
    api_rate_limit_per_second: float = Field(default=50, ge=0)
    api_rate_limit_burst: int = Field(default=100, ge=1)
    # Quotas per org by tier, counted per UTC day and month; null means unlimited. JSON, e.g.
    # {"free": {"tokens_per_day": 5000}}; tiers and limits left out keep their defaults.
    tier_quotas: dict[str, dict[str, int | None]] = Field(
        # A plain default, not a factory: pydantic copies it for each instance.
        default={
            "free": {
                "api_calls_per_day": 10_000,
                "tokens_per_day": 2_000,
                "tokens_per_month": 50_000,
            },
            "pro": {
                "api_calls_per_day": 1_000_000,
                "tokens_per_day": 200_000,
                "tokens_per_month": 5_000_000,
            },
            "enterprise": {
                "api_calls_per_day": None,
                "tokens_per_day": None,
                "tokens_per_month": None,
            },
        }
    )

    @field_validator("tier_quotas")
    @classmethod
    def _tier_quotas(
        cls, value: dict[str, dict[str, int | None]]
    ) -> dict[str, dict[str, int | None]]:
        defaults: dict[str, dict[str, int | None]] = cls.model_fields["tier_quotas"].get_default()
        names = set(defaults["free"])
        merged = {tier: dict(limits) for tier, limits in defaults.items()}
        for tier, limits in value.items():
            unknown = sorted(set(limits) - names)
            if unknown:
                raise ValueError(f"unknown limit {unknown} for tier {tier!r}; use {sorted(names)}")
            if any(limit is not None and limit < 0 for limit in limits.values()):
                raise ValueError(f"limits must be >= 0 or null (unlimited); check {tier!r}")
            merged.setdefault(tier, dict.fromkeys(names)).update(limits)
        return merged

    # Signing keys: the algorithm of new keys, scheduled rotation (0 = never), and the longest
    # access-token lifetime, which is how long a retired key stays in the JWKS (plus leeway).
    signing_algorithm: str = "ES256"
    key_rotation_days: int = Field(default=90, ge=0, le=3650)
    access_token_max_lifetime_seconds: int = Field(default=3600, ge=60, le=86400)

    @field_validator("signing_algorithm")
    @classmethod
    def _signing_algorithm(cls, value: str) -> str:
        # JOSE names; `EdDSA` is the older name of Ed25519 (RFC 9864 §2).
        names = {"es256": "ES256", "ed25519": "Ed25519", "eddsa": "Ed25519", "rs256": "RS256"}
        if value.strip().lower() not in names:
            raise ValueError(f"unsupported value {value!r} (ES256|Ed25519|EdDSA|RS256)")
        return names[value.strip().lower()]

    # PKI: the SPIFFE trust domain of every agent's SPIFFE ID (default: the public URL's host)
    # and the default lifetime of agent certificates (orgs may choose their own, up to 90 days).
    trust_domain: str = ""
    certificate_lifetime_seconds: int = Field(default=86400, ge=300, le=90 * 86400)

    @field_validator("trust_domain")
    @classmethod
    def _trust_domain(cls, value: str) -> str:
        # SPIFFE ID spec §2.1: lowercase letters, digits, dots, dashes and underscores.
        if value and not _TRUST_DOMAIN.fullmatch(value):
            raise ValueError(f"not a SPIFFE trust domain name: {value!r} (a-z 0-9 . - _)")
        return value

    # Operations: when an agent counts as offline, and how often heartbeats are written, presence
    # transitions announced and expired commands swept.
    agent_offline_threshold_seconds: float = Field(default=90, gt=0)
    heartbeat_flush_seconds: float = Field(default=1.0, gt=0, le=30)
    presence_check_seconds: float = Field(default=60, gt=0)
    command_sweep_seconds: float = Field(default=10, gt=0)
    # Heartbeats per instance: a sustained rate per second and a burst (GCRA); 0 turns it off.
    heartbeat_rate_limit_per_second: float = Field(default=1.0, ge=0)
    heartbeat_rate_limit_burst: int = Field(default=5, ge=1)

    # Events: how often the relay publishes committed outbox rows, and webhook deliveries (see
    # docs/events.md). Private networks: allowed in development, refused in production, unless set.
    outbox_relay_interval_seconds: float = Field(default=0.25, gt=0, le=60)
    webhook_delivery_interval_seconds: float = Field(default=0.5, gt=0, le=60)
    webhook_timeout_seconds: float = Field(default=10, gt=0, le=60)
    webhook_max_attempts: int = Field(default=10, ge=1, le=20)
    webhook_pause_after_failures: int = Field(default=50, ge=1)
    webhook_concurrency: int = Field(default=64, ge=1, le=1000)
    webhook_concurrency_per_subscription: int = Field(default=4, ge=1, le=100)
    webhook_allow_private_networks: bool | None = None
    webhook_max_subscriptions_per_org: int = Field(default=100, ge=1, le=10_000)
    # Published events (what streams resume from) and finished deliveries are kept this long.
    event_retention_days: int = Field(default=30, ge=1, le=3650)

    audit_verify_interval_seconds: float = Field(default=300, gt=0)
    shutdown_grace_seconds: float = Field(default=30, gt=0)

    @field_validator("env")
    @classmethod
    def _env(cls, value: str) -> str:
        return _choice(value, ("development", "production"))

    @field_validator("database_backend")
    @classmethod
    def _database_backend(cls, value: str) -> str:
        return _choice(value, ("", "sqlite", "postgres"))

    @field_validator("kv_backend")
    @classmethod
    def _kv_backend(cls, value: str) -> str:
        return _choice(value, ("memory", "redis"))

    @field_validator("bus_backend")
    @classmethod
    def _bus_backend(cls, value: str) -> str:
        return _choice(value, ("memory", "nats"))

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        return _choice(value, ("json", "text"))

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        return _choice(value, ("debug", "info", "warning", "error"))

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"must be an absolute http(s) URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # ValueError names the bad entry
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("database_backend") == "postgres" and not value:
            raise ValueError("postgres backend selected but URL is empty")
        if value and not value.startswith(("sqlite:///", "postgres://", "postgresql")):
            raise ValueError("unsupported URL (sqlite:///PATH or postgresql://HOST/DB)")
        return value

    @field_validator("tier_agent_limits")
    @classmethod
    def _tier_agent_limits(cls, value: dict[str, int | None]) -> dict[str, int | None]:
        negative = [tier for tier, limit in value.items() if limit is not None and limit < 0]
        if negative:
            raise ValueError(f"limits must be >= 0 or null (unlimited); check {negative}")
        return {**DEFAULT_TIER_AGENT_LIMITS, **value}

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy async URL: the configured one, or the SQLite file under data_dir."""
        url = self.database_url
        if not url:
            return f"sqlite+aiosqlite:///{self.data_dir / 'tabard.db'}"
        if url.startswith("postgres://"):
            url = "postgresql://" + url.removeprefix("postgres://")
        if url.startswith("postgresql://"):
            return "postgresql+asyncpg://" + url.removeprefix("postgresql://")
        if url.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
        return url

    @property
    def resolved_trust_domain(self) -> str:
        """The SPIFFE trust domain: the configured one, or the public URL's host (lowercase)."""
        return self.trust_domain or (urlparse(self.public_url).hostname or "localhost").lower()

    @property
    def is_postgres(self) -> bool:
        return self.resolved_database_url.startswith("postgresql")


def production_problems(settings: Settings) -> list[str]:
    """What stops a production start: generated or short secrets, plain-HTTP public URL."""
    problems: list[str] = []
    for name in ("admin_secret", "secret_key", "master_key"):
        secret: SecretStr | None = getattr(settings, name)
        variable = f"{ENV_PREFIX}{name.upper()}"
        if secret is None:
            problems.append(f"{variable}: required in production (generated secrets are refused)")
        elif len(secret.get_secret_value()) < MIN_PRODUCTION_SECRET_LENGTH:
            problems.append(
                f"{variable}: too short for production "
                f"(at least {MIN_PRODUCTION_SECRET_LENGTH} characters)"
            )
    if not settings.public_url.startswith("https://"):
        problems.append(f"{ENV_PREFIX}PUBLIC_URL: must be https in production")
    return problems


def load_settings(**overrides: Any) -> Settings:
    """Build and validate settings, raising `ConfigError` with one line per problem."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    if settings.is_production:
        problems = production_problems(settings)
        if problems:
            raise ConfigError(problems)
    return settings


def _describe(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["loc"]:
            variable = ENV_PREFIX + "_".join(str(part) for part in error["loc"]).upper()
            lines.append(f"{variable}: {message}")
        else:
            lines.append(message)
    return lines


__all__ = ["ConfigError", "Settings", "load_settings", "production_problems"]
