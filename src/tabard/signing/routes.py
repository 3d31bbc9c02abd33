"""Public key discovery: the JWKS that verifies Tabard's signatures (RFC 7517 §5)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from tabard.core.runtime import RuntimeDep
from tabard.signing import service as keys

public_router = APIRouter(tags=["keys"])
# Verifiers may cache the set briefly; a key stays published long after it stops signing.
_JWKS_CACHE = "public, max-age=300"


@public_router.get("/.well-known/jwks.json")
async def jwks(runtime: RuntimeDep, response: Response) -> dict[str, Any]:
    await keys.active_key(runtime.database, runtime.keystore, runtime.clock)
    async with runtime.database.read_only() as session:
        key_set = await keys.jwks(session)
    response.headers["Cache-Control"] = _JWKS_CACHE
    return key_set
