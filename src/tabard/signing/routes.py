"""Public key discovery (the JWKS, RFC 7517 §5) and the platform admin's signing-key routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request, Response
from fastapi.responses import JSONResponse

from tabard.core.runtime import ContextDep, RuntimeDep
from tabard.signing import policy
from tabard.signing import service as keys
from tabard.signing.keyring import PublishedKeys
from tabard.signing.schemas import RotateRequest, RotationOut, SigningKeyOut

public_router = APIRouter(tags=["keys"])
router = APIRouter(prefix="/v1/admin/signing-keys", tags=["keys"])

# Verifiers may cache the set this long. A new key needs no wait (verifiers re-fetch on an
# unknown kid) and a retired key stays published for the longest token lifetime, so a stale
# copy only ever lacks keys that verify nothing live; the emergency path is bounded by this.
JWKS_MAX_AGE_SECONDS = 300


@public_router.get("/.well-known/jwks.json")
async def jwks(request: Request, runtime: RuntimeDep) -> Response:
    """Every public key that may still verify a live token; ETag and 304 for revalidation."""
    settings = runtime.settings
    await keys.ensure_key(
        runtime.database, runtime.keystore, runtime.clock, algorithm=settings.signing_algorithm
    )
    signing_keys = keys.keys_for(runtime.keystore, runtime.clock)
    async with runtime.database.read_only() as session:
        published = await signing_keys.published(session)
    headers = {
        "Cache-Control": f"public, max-age={_max_age(published, runtime.clock.timestamp())}",
        "ETag": published.etag,
    }
    if _etag_matches(request.headers.get("if-none-match"), published.etag):
        return Response(status_code=304, headers=headers)
    return JSONResponse(published.key_set(), headers=headers)


@router.get("", response_model=list[SigningKeyOut])
async def list_signing_keys(runtime: RuntimeDep, ctx: ContextDep) -> list[SigningKeyOut]:
    """Every signing key with its status and publication window (never private material)."""
    policy.require_key_management(ctx.actor)
    async with runtime.database.read_only() as session:
        rows = await keys.list_keys(session)
    return [SigningKeyOut.model_validate(row) for row in rows]


@router.post("/rotate", response_model=RotationOut)
async def rotate_signing_key(
    runtime: RuntimeDep,
    ctx: ContextDep,
    body: Annotated[RotateRequest | None, Body()] = None,
) -> RotationOut:
    """A new active key; the previous one retires, or is revoked with `revoke_previous`.

    Two rotations at once: one wins, the other answers 409 SIGNING_KEY_ROTATION_CONFLICT.
    """
    policy.require_key_management(ctx.actor)
    request = body or RotateRequest()
    async with runtime.database.unit_of_work() as session:
        rotation = await keys.rotate(
            session,
            ctx,
            runtime.keystore,
            runtime.settings,
            algorithm=request.algorithm,
            revoke_previous=request.revoke_previous,
        )
    return RotationOut(
        key=SigningKeyOut.model_validate(rotation.key),
        previous_kid=rotation.previous_kid,
        previous_publish_until=rotation.previous_publish_until,
        revoked_kids=rotation.revoked_kids,
    )


def _max_age(published: PublishedKeys, now: float) -> int:
    """Never cache past the moment a retired key leaves the set."""
    until_expiry = published.seconds_until_expiry(now)
    if until_expiry is None:
        return JWKS_MAX_AGE_SECONDS
    return int(min(JWKS_MAX_AGE_SECONDS, until_expiry))


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: `*` or any listed tag, compared weakly (a `W/` prefix is ignored)."""
    if not if_none_match:
        return False
    candidates = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return any(tag in ("*", etag) for tag in candidates)
