"""Registration tokens through the HTTP API: created by the org (or the admin) for 60 s to 7 days,
shown once and stored as a keyed digest, listed and read without the secret, revoked while
unused; status active → used or expired, or revoked. Each change is audited."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tabard.core.clock import FrozenClock
from tabard.core.runtime import Runtime
from tests.conftest import ADMIN, bearer, create_agent, create_org, create_org_key
from tests.operations.registration_support import (
    TOKENS,
    assert_invalid_token,
    audit_events,
    create_token,
    read_token,
    register,
    registered,
    revoke,
)
from tests.tokens.support import access_token, agent_client


def lifetime(token: dict[str, Any]) -> float:
    created = datetime.fromisoformat(token["created_at"])
    return (datetime.fromisoformat(token["expires_at"]) - created).total_seconds()


class TestCreateRegistrationToken:
    async def test_an_org_key_creates_a_token_shown_in_the_response(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        key = bearer(await create_org_key(client, "acme"))

        response = await client.post(TOKENS, json={"label": "fleet"}, headers=key)

        assert response.status_code == 201, response.text
        body = response.json()
        assert body["token"].startswith("tbd_reg_")
        assert body["prefix"] == body["token"][:12]
        assert (body["org_id"], body["label"], body["status"]) == ("acme", "fleet", "active")
        assert (body["used_at"], body["used_by_agent_id"], body["revoked_at"]) == (None, None, None)
        assert lifetime(body) == 3600

    async def test_the_admin_creates_a_token_with_a_preset(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        preset = {"name_pattern": "worker-*", "capabilities": ["db.backup"], "tags": ["fleet"]}

        response = await client.post(TOKENS, json={"preset": preset}, headers=ADMIN)

        assert response.status_code == 201, response.text
        assert response.json()["preset"] == {**preset, "agent_id": None}
        assert response.json()["token"].startswith("tbd_reg_")

    async def test_another_orgs_key_is_not_found(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        globex = bearer(await create_org_key(client, "globex"))

        response = await client.post(TOKENS, json={}, headers=globex)

        assert response.status_code == 404, response.text
        assert response.json()["code"] == "ORG_NOT_FOUND"
        assert (await client.get(TOKENS, headers=ADMIN)).json() == []

    async def test_an_agents_access_token_is_forbidden(self, client: httpx.AsyncClient) -> None:
        bot = await agent_client(client, "acme", "bot")
        agent = bearer(await access_token(client, bot))

        response = await client.post(TOKENS, json={}, headers=agent)

        assert response.status_code == 403, response.text
        assert response.json()["code"] == "NOT_PERMITTED"
        assert (await client.get(TOKENS, headers=ADMIN)).json() == []

    @pytest.mark.parametrize("seconds", [60, 604800])
    async def test_expires_in_at_the_bounds_is_accepted(
        self, client: httpx.AsyncClient, seconds: int
    ) -> None:
        await create_org(client, "acme")

        token = await create_token(client, expires_in=seconds)

        assert lifetime(token) == seconds

    @pytest.mark.parametrize("seconds", [0, 59, 604801])
    async def test_expires_in_outside_the_bounds_is_422(
        self, client: httpx.AsyncClient, seconds: int
    ) -> None:
        await create_org(client, "acme")

        response = await client.post(TOKENS, json={"expires_in": seconds}, headers=ADMIN)

        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "body.expires_in"
        assert (await client.get(TOKENS, headers=ADMIN)).json() == []

    async def test_a_preset_agent_of_another_org_is_not_found(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        theirs = await create_agent(client, "globex", "their-bot")

        response = await client.post(
            TOKENS, json={"preset": {"agent_id": theirs["id"]}}, headers=ADMIN
        )

        assert response.status_code == 404, response.text
        assert response.json()["code"] == "AGENT_NOT_FOUND"
        assert (await client.get(TOKENS, headers=ADMIN)).json() == []

    async def test_a_suspended_org_gets_no_token(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        assert (await client.post("/v1/orgs/acme/suspend", headers=ADMIN)).status_code == 200

        response = await client.post(TOKENS, json={}, headers=ADMIN)

        assert response.status_code == 403, response.text
        assert response.json()["code"] == "ORG_SUSPENDED"
        assert (await client.get(TOKENS, headers=ADMIN)).json() == []

    async def test_creating_is_audited(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")

        token = await create_token(client, label="fleet")

        events = await audit_events(client, "registration_token.created")
        assert [(e["target"], e["details"]["label"]) for e in events] == [(token["id"], "fleet")]
        assert events[0]["actor_kind"] == "platform_admin"


class TestTokenStorage:
    async def test_only_a_keyed_digest_of_the_secret_is_stored(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        token = await create_token(client)
        secret = token["token"]

        async with runtime.database.read_only() as session:
            statement = text("SELECT * FROM registration_tokens WHERE id = :id")
            row = (await session.execute(statement, {"id": token["id"]})).mappings().one()

        expected = hmac.new(runtime.secret_key, secret.encode(), hashlib.sha256).hexdigest()
        assert row["digest"] == expected
        assert row["digest"] != hashlib.sha256(secret.encode()).hexdigest()
        stored = " ".join(str(value) for value in row.values())
        assert secret not in stored
        assert secret[len(token["prefix"]) :] not in stored


class TestListRegistrationTokens:
    async def test_the_list_never_shows_a_secret(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        first, second = await create_token(client), await create_token(client)

        response = await client.get(TOKENS, headers=ADMIN)

        assert response.status_code == 200, response.text
        assert {item["id"] for item in response.json()} == {first["id"], second["id"]}
        assert all("token" not in item for item in response.json())
        assert first["token"] not in response.text
        assert second["token"] not in response.text

    async def test_the_status_filter_lists_tokens_in_that_status(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        active, used = await create_token(client), await create_token(client)
        revoked, expired = await create_token(client), await create_token(client, expires_in=60)
        await registered(client, used, name="worker")
        assert (await revoke(client, revoked)).status_code == 204
        clock.advance(61)

        for token, status in ((active, "active"), (used, "used"), (revoked, "revoked")):
            response = await client.get(TOKENS, params={"status": status}, headers=ADMIN)
            assert response.status_code == 200, response.text
            assert [item["id"] for item in response.json()] == [token["id"]], status
        response = await client.get(TOKENS, params={"status": "expired"}, headers=ADMIN)
        assert [item["id"] for item in response.json()] == [expired["id"]]

    async def test_an_unknown_status_is_422(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")

        response = await client.get(TOKENS, params={"status": "lost"}, headers=ADMIN)

        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "query.status"

    async def test_another_orgs_key_is_not_found(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        await create_token(client)

        response = await client.get(TOKENS, headers=bearer(await create_org_key(client, "globex")))

        assert response.status_code == 404, response.text
        assert response.json()["code"] == "ORG_NOT_FOUND"


class TestGetRegistrationToken:
    async def test_reading_a_token_never_shows_its_secret(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        token = await create_token(client, label="fleet")

        response = await client.get(f"{TOKENS}/{token['id']}", headers=ADMIN)

        assert response.status_code == 200, response.text
        assert "token" not in response.json()
        assert token["token"] not in response.text
        assert response.json() == {key: value for key, value in token.items() if key != "token"}

    async def test_a_used_token_reads_used_by_its_agent(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        token = await create_token(client)
        clock.advance(10)

        body = await registered(client, token, name="worker")

        read = await read_token(client, token)
        assert read["status"] == "used"
        assert read["used_by_agent_id"] == body["agent_id"]
        assert datetime.fromisoformat(read["used_at"]) == clock.now()

    async def test_an_unused_token_expires_when_its_time_has_passed(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        token = await create_token(client, expires_in=60)
        clock.advance(59)
        assert (await read_token(client, token))["status"] == "active"

        clock.advance(1)

        assert (await read_token(client, token))["status"] == "expired"

    async def test_a_used_token_stays_used_after_its_expiry(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        token = await create_token(client, expires_in=60)
        await registered(client, token, name="worker")

        clock.advance(3600)

        assert (await read_token(client, token))["status"] == "used"

    async def test_an_unknown_token_is_not_found(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")

        response = await client.get(f"{TOKENS}/no-such-token", headers=ADMIN)

        assert response.status_code == 404, response.text
        assert response.json()["code"] == "REGISTRATION_TOKEN_NOT_FOUND"

    async def test_another_orgs_token_is_not_found_under_its_own_org(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        token = await create_token(client)

        response = await client.get(
            f"/v1/orgs/globex/registration-tokens/{token['id']}", headers=ADMIN
        )

        assert response.status_code == 404, response.text
        assert response.json()["code"] == "REGISTRATION_TOKEN_NOT_FOUND"


class TestRevokeRegistrationToken:
    async def test_revoking_an_active_token_makes_it_unusable(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        token = await create_token(client)

        response = await revoke(client, token)

        assert response.status_code == 204, response.text
        read = await read_token(client, token)
        assert read["status"] == "revoked"
        assert datetime.fromisoformat(read["revoked_at"]) == clock.now()
        assert_invalid_token(await register(client, token, name="worker"))

    async def test_an_org_key_revokes_its_own_token(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        key = bearer(await create_org_key(client, "acme"))
        token = await create_token(client, key)

        response = await client.delete(f"{TOKENS}/{token['id']}", headers=key)

        assert response.status_code == 204, response.text
        assert (await read_token(client, token))["status"] == "revoked"

    async def test_revoking_a_used_token_is_a_conflict(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        token = await create_token(client)
        await registered(client, token, name="worker")

        response = await revoke(client, token)

        assert response.status_code == 409, response.text
        assert response.json()["code"] == "REGISTRATION_TOKEN_STATE_CONFLICT"
        read = await read_token(client, token)
        assert (read["status"], read["revoked_at"]) == ("used", None)

    async def test_revoking_a_revoked_token_is_a_conflict(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        token = await create_token(client)
        assert (await revoke(client, token)).status_code == 204
        first = (await read_token(client, token))["revoked_at"]
        clock.advance(5)

        response = await revoke(client, token)

        assert response.status_code == 409, response.text
        assert response.json()["code"] == "REGISTRATION_TOKEN_STATE_CONFLICT"
        assert (await read_token(client, token))["revoked_at"] == first

    async def test_an_expired_token_can_still_be_revoked(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        token = await create_token(client, expires_in=60)
        clock.advance(61)

        response = await revoke(client, token)

        assert response.status_code == 204, response.text
        assert (await read_token(client, token))["status"] == "revoked"

    async def test_another_orgs_key_cannot_revoke_the_token(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        token = await create_token(client)
        globex = bearer(await create_org_key(client, "globex"))

        theirs = await client.delete(f"{TOKENS}/{token['id']}", headers=globex)
        own = await client.delete(
            f"/v1/orgs/globex/registration-tokens/{token['id']}", headers=globex
        )

        assert (theirs.status_code, own.status_code) == (404, 404), [theirs.text, own.text]
        assert (theirs.json()["code"], own.json()["code"]) == (
            "ORG_NOT_FOUND",
            "REGISTRATION_TOKEN_NOT_FOUND",
        )
        assert (await read_token(client, token))["status"] == "active"

    async def test_revoking_is_audited(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        token = await create_token(client, label="fleet")

        await revoke(client, token)

        events = await audit_events(client, "registration_token.revoked")
        assert [(e["target"], e["details"]["label"]) for e in events] == [(token["id"], "fleet")]
