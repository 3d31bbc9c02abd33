"""Helpers shared by the signing-key tests: rotate through the service, read the JWKS."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
from sqlalchemy import select

from tabard.core.config import Settings
from tabard.core.context import SYSTEM, Context
from tabard.core.runtime import Runtime
from tabard.signing import service as keys
from tabard.signing.models import SigningKey


async def rotate(
    runtime: Runtime,
    settings: Settings | None = None,
    *,
    algorithm: str | None = None,
    revoke_previous: bool = False,
) -> keys.Rotation:
    """One rotation in its own unit of work, as the admin route and the CLI run it."""
    ctx = Context(actor=SYSTEM, clock=runtime.clock, kv=runtime.kv)
    async with runtime.database.unit_of_work() as session:
        return await keys.rotate(
            session,
            ctx,
            runtime.keystore,
            settings or runtime.settings,
            algorithm=algorithm,
            revoke_previous=revoke_previous,
        )


async def active(runtime: Runtime) -> keys.SigningMaterial:
    return await keys.active_key(runtime.database, runtime.keystore, runtime.clock)


async def published_kids(client: httpx.AsyncClient) -> list[str]:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200, response.text
    return [key["kid"] for key in response.json()["keys"]]


async def rows(runtime: Runtime) -> dict[str, SigningKey]:
    async with runtime.database.read_only() as session:
        found = (await session.execute(select(SigningKey))).scalars()
        return {row.kid: row for row in found}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact_jws(material: keys.SigningMaterial, claims: dict[str, Any]) -> str:
    """A compact JWS signed through `SigningMaterial.sign`, as the token service does."""
    header = b64url(json.dumps({"alg": material.alg, "kid": material.kid, "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = material.sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{b64url(signature)}"
