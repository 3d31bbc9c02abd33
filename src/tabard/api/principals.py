"""Resolve the caller once per request: platform admin, org API key, or an agent's access token
(Bearer or DPoP, verified with its proof of possession)."""

from __future__ import annotations

from fastapi import Request

from tabard.core.context import Actor, ActorKind
from tabard.core.errors import Unauthenticated
from tabard.core.runtime import Runtime, get_runtime
from tabard.core.singleflight import SingleFlight
from tabard.limits import service as limits
from tabard.limits.schemas import QuotaKind
from tabard.tenancy import service as tenancy
from tabard.tenancy.authentication import (
    AdminAuthenticator,
    authenticate_api_secret,
    record_key_use,
)
from tabard.tokens.resource import ResourceAuthenticator, presented_token

_BEARER = "bearer "
_TIER_CACHE_SECONDS = 60.0
_TIER_CACHE_SIZE = 10_000


async def optional_principal(request: Request) -> None:
    """For public routes: anonymous without credentials, else exactly as `require_principal`
    (bad credentials are still a 401, never a silent downgrade to anonymous)."""
    if "authorization" in request.headers:
        await require_principal(request)


async def require_principal(request: Request) -> None:
    """Authenticate the caller, count the call (rate limit, daily quota), and store the actor
    on `request.state`."""
    await _resolve(request, count=True)


async def require_agent_principal(request: Request) -> None:
    """The same for an agent's operational calls (heartbeats, command polls and results):
    not counted against its org's API quota; their routes apply their own limits."""
    await _resolve(request, count=False)


async def _resolve(request: Request, *, count: bool) -> None:
    runtime = get_runtime(request)
    presented = presented_token(request, runtime.settings)
    if presented is not None:
        authenticator: ResourceAuthenticator = request.app.state.resource_authenticator
        verified = await authenticator.authenticate(presented)
        claims = verified.claims
        request.state.actor = Actor(ActorKind.AGENT, str(claims["sub"]), str(claims["org"]))
        request.state.token_claims = claims
        if count:
            await _count_call(request, runtime, request.state.actor)
        return
    token = _bearer_token(request)
    admin: AdminAuthenticator = request.app.state.admin_authenticator
    async with runtime.database.read_only() as session:
        actor, stale = await authenticate_api_secret(
            session, admin, runtime.secret_key, token, runtime.clock
        )
    request.state.actor = actor
    if count:
        await _count_call(request, runtime, actor)
    if stale and actor.id is not None:
        async with runtime.database.unit_of_work() as session:
            await record_key_use(session, actor.id, runtime.clock)


async def _count_call(request: Request, runtime: Runtime, actor: Actor) -> None:
    """The principal's rate limit first (a refused call uses no quota), then its org's daily
    API-call quota; the rate-limit headers go on the response. The platform admin operates the
    deployment and is limited by neither."""
    if actor.org_id is None:
        return
    principal = f"{actor.kind.value}:{actor.id}"
    kv, settings, clock = runtime.kv, runtime.settings, runtime.clock
    request.state.rate_limit_headers = await limits.check_api_rate(kv, settings, clock, principal)
    tier = await _org_tier(request, runtime, actor.org_id)
    await limits.consume_quota(kv, settings, clock, actor.org_id, tier, QuotaKind.API_CALL)


async def _org_tier(request: Request, runtime: Runtime, org_id: str) -> str:
    """The org's tier, remembered for a minute per process (tiers change rarely)."""
    cache: dict[str, tuple[float, str]] = request.app.state.org_tiers
    now = runtime.clock.timestamp()
    cached = cache.get(org_id)
    if cached is not None and cached[0] > now:
        return cached[1]
    reads: SingleFlight[str, str] = request.app.state.org_tier_reads
    return await reads.run(org_id, lambda: _read_tier(runtime, cache, org_id, now))


async def _read_tier(
    runtime: Runtime, cache: dict[str, tuple[float, str]], org_id: str, now: float
) -> str:
    async with runtime.database.read_only() as session:
        tier = (await tenancy.get_org(session, org_id)).tier
    if len(cache) > _TIER_CACHE_SIZE:
        cache.clear()
    cache[org_id] = (now + _TIER_CACHE_SECONDS, tier)
    return tier


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith(_BEARER) or not header[len(_BEARER) :].strip():
        raise Unauthenticated(
            "send 'Authorization: Bearer <org key, admin secret or access token>' "
            "(or 'DPoP <access token>' with a DPoP proof)"
        )
    return header[len(_BEARER) :].strip()
