"""Resolve the caller once per request: platform admin or org API key (agents come later)."""

from __future__ import annotations

from fastapi import Request

from tabard.core.errors import Unauthenticated
from tabard.core.runtime import get_runtime
from tabard.tenancy.authentication import (
    AdminAuthenticator,
    authenticate_org_key,
    looks_like_org_key,
    record_key_use,
)

_BEARER = "bearer "


async def optional_principal(request: Request) -> None:
    """For public routes: anonymous without credentials, else exactly as `require_principal`
    (bad credentials are still a 401, never a silent downgrade to anonymous)."""
    if "authorization" in request.headers:
        await require_principal(request)


async def require_principal(request: Request) -> None:
    """Authenticate the bearer token and store the actor on `request.state`."""
    token = _bearer_token(request)
    runtime = get_runtime(request)
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
        raise Unauthenticated("send 'Authorization: Bearer <org key or admin secret>'")
    return header[len(_BEARER) :].strip()
