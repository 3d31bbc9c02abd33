"""Rate limits and tier quotas, on the key-value store so every replica shares them.

Rate limits are GCRA buckets (`KeyValueStore.gcra`): a sustained rate plus a burst, with no fixed
windows to double up at an edge. Quotas are counters per org and UTC day or month; the UTC date is
part of the key, so a new day starts from zero without any reset job. Nothing here commits or
touches HTTP: callers (the token endpoint, principal resolution, the usage route) pass the kv
store, settings and clock, and put the returned headers on their responses.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.clock import Clock
from tabard.core.config import Settings
from tabard.core.kv import KeyValueStore
from tabard.core.metrics import RATE_LIMIT_HITS, TIER_LIMIT_REJECTIONS
from tabard.limits.errors import RateLimitExceeded, TierLimitExceeded
from tabard.limits.headers import Policy, RateLimitHeaders, limit_headers, retry_after
from tabard.limits.schemas import (
    QuotaKind,
    QuotaName,
    QuotaUsage,
    RateLimitName,
    RateLimitOut,
    UsageOut,
)
from tabard.tenancy import service as tenancy

# Quota counters outlive their day or month by this much, so a replica whose clock lags a little
# behind the boundary still finds (rather than recreates) the counter it is adding to.
COUNTER_SLACK_SECONDS = 3600
# Longer subjects (client ids come from the request) are stored as a digest: keys stay bounded.
MAX_SUBJECT_LENGTH = 128
_QUOTAS_OF_KIND = {
    QuotaKind.API_CALL: (QuotaName.API_CALLS_PER_DAY,),
    QuotaKind.TOKEN: (QuotaName.TOKENS_PER_DAY, QuotaName.TOKENS_PER_MONTH),
}


# Rate limits


@dataclass(frozen=True, slots=True)
class _RateLimit:
    name: RateLimitName
    per_second: float
    burst: int
    policy: Policy

    @property
    def enabled(self) -> bool:
        return self.per_second > 0


@lru_cache(maxsize=64)
def _rate_limit(name: RateLimitName, per_second: float, burst: int) -> _RateLimit:
    """One limit as configured, built once per value: every API call and heartbeat asks."""
    # Up to `burst` at once, refilled over the window: quota / window is the sustained rate.
    window = max(1, math.ceil(burst / per_second)) if per_second > 0 else 1
    return _RateLimit(name, per_second, burst, Policy(name.value, burst, window))


def _token_limit(settings: Settings) -> _RateLimit:
    return _rate_limit(
        RateLimitName.TOKEN_ENDPOINT,
        settings.token_rate_limit_per_second,
        settings.token_rate_limit_burst,
    )


def _api_limit(settings: Settings) -> _RateLimit:
    return _rate_limit(
        RateLimitName.API, settings.api_rate_limit_per_second, settings.api_rate_limit_burst
    )


def _heartbeat_limit(settings: Settings) -> _RateLimit:
    return _rate_limit(
        RateLimitName.HEARTBEAT,
        settings.heartbeat_rate_limit_per_second,
        settings.heartbeat_rate_limit_burst,
    )


def _rate_limits(settings: Settings) -> tuple[_RateLimit, _RateLimit, _RateLimit]:
    return _token_limit(settings), _api_limit(settings), _heartbeat_limit(settings)


async def check_token_rate(
    kv: KeyValueStore, settings: Settings, clock: Clock, client_id: str
) -> RateLimitHeaders:
    """Count one token request of `client_id`: headers for the response, or RateLimitExceeded."""
    return await _take(kv, clock, _token_limit(settings), client_id)


async def check_api_rate(
    kv: KeyValueStore, settings: Settings, clock: Clock, principal_key: str
) -> RateLimitHeaders:
    """Count one API call of a principal (`org_key:<id>`, `agent:<id>`, `admin`), as above."""
    return await _take(kv, clock, _api_limit(settings), principal_key)


async def check_heartbeat_rate(
    kv: KeyValueStore, settings: Settings, clock: Clock, instance_key: str
) -> None:
    """Count one heartbeat of an agent instance (`<agent id>/<instance id>`), or raise
    RateLimitExceeded: fleets are limited per process, not per agent, so a thousand instances of
    one agent may beat. An accepted beat's ack carries no rate-limit headers (nobody reads them
    on the fleet's hottest path); a refusal does."""
    await _take(kv, clock, _heartbeat_limit(settings), instance_key, headers_on_success=False)


async def _take(
    kv: KeyValueStore,
    clock: Clock,
    limit: _RateLimit,
    subject: str,
    *,
    headers_on_success: bool = True,
) -> RateLimitHeaders:
    if not limit.enabled:
        return {}
    policy = limit.policy
    state = await kv.gcra(
        f"rate:{limit.name.value}:{_bounded(subject)}",
        period_seconds=policy.quota / limit.per_second,
        limit=policy.quota,
        burst=policy.quota,
    )
    if state.allowed and not headers_on_success:
        return {}
    headers = limit_headers(
        policy,
        remaining=state.remaining,
        reset_after_seconds=state.reset_after_seconds,
        now=clock.timestamp(),
    )
    if state.allowed:
        return headers
    RATE_LIMIT_HITS.labels(limit=limit.name.value).inc()
    wait = retry_after(state.retry_after_seconds)
    raise RateLimitExceeded(
        f"rate limit {limit.name.value!r} exceeded: {limit.burst} at once, "
        f"{limit.per_second:g} per second; retry after {wait} s",
        {**headers, "Retry-After": wait},
    )


def _bounded(subject: str) -> str:
    if len(subject) <= MAX_SUBJECT_LENGTH:
        return subject
    return "sha256:" + hashlib.sha256(subject.encode()).hexdigest()


# Tier quotas


@dataclass(frozen=True, slots=True)
class _Counter:
    name: QuotaName
    key: str
    limit: int | None
    starts_at: datetime
    resets_at: datetime

    def ttl_seconds(self, now: datetime) -> float:
        return (self.resets_at - now).total_seconds() + COUNTER_SLACK_SECONDS

    def policy(self, limit: int) -> Policy:
        window = round((self.resets_at - self.starts_at).total_seconds())
        return Policy(self.name.value, limit, window)


def _counter(
    settings: Settings, org_id: str, tier: str, name: QuotaName, now: datetime
) -> _Counter:
    """The counter of quota `name` for the UTC day or month containing `now`."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if name is QuotaName.TOKENS_PER_MONTH:
        starts_at = day.replace(day=1)
        resets_at = (starts_at + timedelta(days=32)).replace(day=1)
        period = starts_at.strftime("%Y-%m")
    else:
        starts_at, resets_at = day, day + timedelta(days=1)
        period = starts_at.strftime("%Y-%m-%d")
    # A tier without configured quotas (none by default) is unlimited, like tier_agent_limits.
    limit = settings.tier_quotas.get(tier, {}).get(name.value)
    key = f"quota:{org_id}:{name.value}:{period}"
    return _Counter(name, key, limit, starts_at, resets_at)


async def consume_quota(
    kv: KeyValueStore, settings: Settings, clock: Clock, org_id: str, tier: str, kind: QuotaKind
) -> None:
    """Count one `kind` for the org against its tier's quotas, or raise TierLimitExceeded.

    A token counts against both tokens_per_day and tokens_per_month. A refused request takes
    nothing back: each counter it raised is lowered again before the error is raised. Counters
    run on atomic increments, so concurrent requests on any replica never pass a limit together.
    """
    now = clock.now()
    raised: list[_Counter] = []
    for name in _QUOTAS_OF_KIND[kind]:
        counter = _counter(settings, org_id, tier, name, now)
        used = await kv.incr(counter.key, 1, ttl_seconds=counter.ttl_seconds(now))
        raised.append(counter)
        if counter.limit is not None and used > counter.limit:
            for taken in raised:
                # With the TTL: should the key have expired meanwhile, the -1 expires too.
                await kv.incr(taken.key, -1, ttl_seconds=taken.ttl_seconds(now))
            raise _tier_limit_exceeded(counter, counter.limit, now)


def _tier_limit_exceeded(counter: _Counter, limit: int, now: datetime) -> TierLimitExceeded:
    TIER_LIMIT_REJECTIONS.labels(limit=counter.name.value).inc()
    seconds_left = (counter.resets_at - now).total_seconds()
    headers = limit_headers(
        counter.policy(limit), remaining=0, reset_after_seconds=seconds_left, now=now.timestamp()
    )
    headers["Retry-After"] = retry_after(seconds_left)
    return TierLimitExceeded(
        counter.name.value,
        f"the organization's tier allows {limit} ({counter.name.value}); "
        f"the counter resets at {counter.resets_at.isoformat()}",
        headers,
    )


async def usage(
    kv: KeyValueStore, settings: Settings, clock: Clock, org_id: str, tier: str
) -> UsageOut:
    """The org's quotas with what it used in the current UTC day and month, and the rate limits."""
    now = clock.now()
    counters = [_counter(settings, org_id, tier, name, now) for name in QuotaName]
    values = await kv.get_many([counter.key for counter in counters])
    quotas = [_quota_usage(counter, value) for counter, value in zip(counters, values, strict=True)]
    return UsageOut(
        org_id=org_id,
        tier=tier,
        as_of=now,
        quotas=quotas,
        rate_limits=[_rate_limit_out(limit) for limit in _rate_limits(settings)],
    )


async def org_usage(
    session: AsyncSession, kv: KeyValueStore, settings: Settings, clock: Clock, org_id: str
) -> UsageOut:
    """`usage` of an existing org at its current tier; OrgNotFound when there is no such org."""
    org = await tenancy.get_org(session, org_id)
    return await usage(kv, settings, clock, org.id, org.tier)


def _quota_usage(counter: _Counter, value: bytes | None) -> QuotaUsage:
    # An undo racing the key's expiry can leave -1 behind: never show negative usage.
    used = max(0, int(value or b"0"))
    remaining = None if counter.limit is None else max(0, counter.limit - used)
    return QuotaUsage(
        name=counter.name,
        limit=counter.limit,
        used=used,
        remaining=remaining,
        resets_at=counter.resets_at,
    )


def _rate_limit_out(limit: _RateLimit) -> RateLimitOut:
    if not limit.enabled:
        return RateLimitOut(name=limit.name, per_second=None, burst=None)
    return RateLimitOut(name=limit.name, per_second=limit.per_second, burst=limit.burst)
