"""The registry's signing key: created once, sealed at rest, published in the JWKS."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest
from cryptography.exceptions import InvalidTag
from joserfc import jws
from joserfc.errors import BadSignatureError
from joserfc.jwk import import_key
from sqlalchemy import func, select

from tabard.api.app import create_app
from tabard.core.config import Settings
from tabard.core.keystore import KeyStore
from tabard.core.runtime import Runtime
from tabard.signing import service as keys
from tabard.signing.models import SigningKey

_PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


class TestActiveKey:
    async def test_first_use_creates_one_key_even_when_callers_race(self, runtime: Runtime) -> None:
        materials = await asyncio.gather(
            *(keys.active_key(runtime.database, runtime.keystore, runtime.clock) for _ in range(5))
        )
        assert len({material.kid for material in materials}) == 1
        async with runtime.database.read_only() as session:
            count = (await session.execute(select(func.count()).select_from(SigningKey))).scalar()
        assert count == 1

    async def test_private_key_is_sealed_under_the_master_key(self, runtime: Runtime) -> None:
        material = await keys.active_key(runtime.database, runtime.keystore, runtime.clock)
        async with runtime.database.read_only() as session:
            row = await session.get(SigningKey, material.kid)
        assert row is not None
        assert b"PRIVATE KEY" not in row.sealed_private_key
        with pytest.raises(InvalidTag):
            KeyStore(b"another master key").decrypt(row.sealed_private_key, b"anything")


class TestWrongMasterKey:
    async def test_readiness_and_signing_name_the_master_key(
        self, settings: Settings, runtime: Runtime
    ) -> None:
        """A database restored without its master key: /readyz says so, signing answers 503,
        and the JWKS (public halves only, nothing to decrypt) is still served."""
        await keys.active_key(runtime.database, runtime.keystore, runtime.clock)
        restored = dataclasses.replace(runtime, keystore=KeyStore(b"not the original master key"))
        app = create_app(settings, runtime=restored)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://tabard.test") as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert "master key" in ready.json()["checks"]["keystore"]["detail"]
            document = await http.get("/.well-known/did.json")
            assert document.status_code == 503
            assert document.json()["code"] == "SIGNING_KEY_UNAVAILABLE"
            jwks = await http.get("/.well-known/jwks.json")
            assert jwks.status_code == 200
            assert len(jwks.json()["keys"]) == 1


class TestJwks:
    async def test_publishes_the_public_half_under_its_thumbprint(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        response = await client.get("/.well-known/jwks.json")
        assert response.status_code == 200
        assert "max-age" in response.headers["cache-control"]
        (published,) = response.json()["keys"]
        assert not _PRIVATE_MEMBERS & published.keys()
        assert published["alg"] == "ES256"
        assert published["use"] == "sig"
        assert import_key(published).thumbprint() == published["kid"]

    async def test_a_signature_by_the_active_key_verifies_with_the_jwks(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        material = await keys.active_key(runtime.database, runtime.keystore, runtime.clock)
        header, signature = keys.sign_detached(material, b'{"claim":1}')
        (published,) = (await client.get("/.well-known/jwks.json")).json()["keys"]
        public = import_key(published)
        compact = f"{header}.eyJjbGFpbSI6MX0.{signature}"
        assert jws.deserialize_compact(compact, public, algorithms=["ES256"]).payload == (
            b'{"claim":1}'
        )
        tampered = f"{header}.eyJjbGFpbSI6Mn0.{signature}"
        with pytest.raises(BadSignatureError):
            jws.deserialize_compact(tampered, public, algorithms=["ES256"])
