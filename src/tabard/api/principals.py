"""Resolve the caller once per request: platform admin, org API key, or an agent's access token
(Bearer or DPoP, verified with its proof of possession)."""

from __future__ import annotations

from fastapi import Request

from tabard.core.context import Actor, ActorKind
from tabard.core.errors import Unauthenticated
from tabard.core.runtime import get_runtime
from tabard.tenancy.authentication import (
    AdminAuthenticator,
    authenticate_org_key,
    looks_like_org_key,
    record_key_use,
)
from tabard.tokens.resource import ResourceAuthenticator, presented_token

_BEARER = "bearer "


async def optional_principal(request: Request) -> None:
    """For public routes: anonymous without credentials, else exactly as `require_principal`
    (bad credentials are still a 401, never a silent downgrade to anonymous)."""
    if "authorization" in request.headers:
        await require_principal(request)


async def require_principal(request: Request) -> None:
    """Authenticate the caller and store the actor on `request.state`."""
    runtime = get_runtime(request)
    presented = presented_token(request, runtime.settings)
    if presented is not None:
        authenticator: ResourceAuthenticator = request.app.state.resource_authenticator
        verified = await authenticator.authenticate(presented)
        claims = verified.claims
        request.state.actor = Actor(ActorKind.AGENT, str(claims["sub"]), str(claims["org"]))
        request.state.token_claims = claims
        return
    token = _bearer_token(request)
    admin: AdminAuthenticator = request.app.state.admin_authenticator
    stale = False
    async with runtime.database.read_only() as session:
        if looks_like_org_key(token):
            actor, stale = await authenticate_org_key(
                session, runtime.secret_key, token, runtime.clock
            )
        else:
            actor = await admin.authenticate(session, token)
    request.state.actor = actor
    if stale and actor.id is not None:
        async with runtime.database.unit_of_work() as session:
            await record_key_use(session, actor.id, runtime.clock)


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith(_BEARER) or not header[len(_BEARER) :].strip():
        raise Unauthenticated(
            "send 'Authorization: Bearer <org key, admin secret or access token>' "
            "(or 'DPoP <access token>' with a DPoP proof)"
        )
    return header[len(_BEARER) :].strip()
