"""Org API keys: shown once, stored as keyed digests, revocable, expiring."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from tabard.core.clock import FrozenClock
from tabard.core.runtime import Runtime
from tabard.tenancy.models import OrgApiKey
from tests.conftest import ADMIN, bearer, create_org, create_org_key


class TestCreateKey:
    async def test_secret_is_shown_once_and_never_listed(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        secret = await create_org_key(client, "acme")
        assert secret.startswith("tbd_org_")
        assert len(secret) > 40
        listed = (await client.get("/v1/orgs/acme/keys", headers=ADMIN)).text
        assert secret not in listed
        assert secret[:12] in listed  # the display prefix helps operators tell keys apart

    async def test_only_a_keyed_digest_is_stored(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        secret = await create_org_key(client, "acme")
        async with runtime.database.unit_of_work() as session:
            stored = (await session.execute(select(OrgApiKey))).scalar_one()
        assert secret not in {stored.digest, stored.prefix, stored.name}
        assert len(stored.digest) == 64

    async def test_org_key_authenticates_as_its_org(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        key = await create_org_key(client, "acme")
        me = (await client.get("/v1/me", headers=bearer(key))).json()
        assert me["kind"] == "org_key"
        assert me["org_id"] == "acme"

    async def test_org_key_can_mint_another_key_for_its_org(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        key = await create_org_key(client, "acme")
        response = await client.post(
            "/v1/orgs/acme/keys", json={"name": "second"}, headers=bearer(key)
        )
        assert response.status_code == 201

    async def test_expires_in_below_a_minute_is_422(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        response = await client.post(
            "/v1/orgs/acme/keys", json={"name": "k", "expires_in": 5}, headers=ADMIN
        )
        assert response.status_code == 422
        assert response.json()["detail"].startswith("body.expires_in")


class TestKeyLifecycle:
    async def test_revoked_key_is_refused_at_once(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        key = await create_org_key(client, "acme")
        key_id = (await client.get("/v1/orgs/acme/keys", headers=ADMIN)).json()[0]["id"]
        assert (
            await client.delete(f"/v1/orgs/acme/keys/{key_id}", headers=ADMIN)
        ).status_code == 204
        response = await client.get("/v1/me", headers=bearer(key))
        assert response.status_code == 401
        assert response.json()["code"] == "INVALID_CREDENTIALS"
        assert response.headers["www-authenticate"].startswith("Bearer")

    async def test_revoking_twice_is_404(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org_key(client, "acme")
        key_id = (await client.get("/v1/orgs/acme/keys", headers=ADMIN)).json()[0]["id"]
        await client.delete(f"/v1/orgs/acme/keys/{key_id}", headers=ADMIN)
        again = await client.delete(f"/v1/orgs/acme/keys/{key_id}", headers=ADMIN)
        assert again.status_code == 404
        assert again.json()["code"] == "API_KEY_NOT_FOUND"

    async def test_expired_key_is_refused(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        created = await client.post(
            "/v1/orgs/acme/keys", json={"name": "short", "expires_in": 60}, headers=ADMIN
        )
        key = created.json()["secret"]
        assert (await client.get("/v1/me", headers=bearer(key))).status_code == 200
        clock.advance(61)
        assert (await client.get("/v1/me", headers=bearer(key))).status_code == 401

    async def test_last_used_time_is_recorded(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        key = await create_org_key(client, "acme")
        await client.get("/v1/me", headers=bearer(key))
        listed = (await client.get("/v1/orgs/acme/keys", headers=ADMIN)).json()[0]
        assert listed["last_used_at"] is not None


class TestAuthentication:
    async def test_missing_credentials_is_401_problem(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/orgs")
        assert response.status_code == 401
        assert response.json()["code"] == "UNAUTHENTICATED"

    async def test_wrong_admin_secret_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/orgs", headers=bearer("not-the-secret"))
        assert response.status_code == 401
        assert response.json()["code"] == "INVALID_CREDENTIALS"

    async def test_unknown_org_key_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/me", headers=bearer("tbd_org_" + "x" * 43))
        assert response.status_code == 401

    async def test_denials_are_audited(self, client: httpx.AsyncClient) -> None:
        await client.get("/v1/orgs", headers=bearer("not-the-secret"))
        events = (
            await client.get("/v1/audit", params={"outcome": "denied"}, headers=ADMIN)
        ).json()["items"]
        assert len(events) == 1
        assert events[0]["action"] == "request.denied"
        assert events[0]["details"] == {"reason": "INVALID_CREDENTIALS"}
        assert events[0]["target"] == "GET /v1/orgs"
