"""Invites through the HTTP API: the platform admin issues single-use invites of two kinds.

The secret is shown once and stored as its SHA-256; an invite is active until used, revoked or
expired; inspecting it does not use it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from tabard.core.clock import FrozenClock
from tabard.core.runtime import Runtime
from tests.conftest import ADMIN, bearer, create_org, create_org_key
from tests.trust.support import (
    HOUR,
    YEAR,
    assert_invite_invalid,
    create_invite,
    invite_status,
    join,
)


class TestCreateInvite:
    async def test_admin_creates_a_join_invite_shown_once(self, client: httpx.AsyncClient) -> None:
        invite = await create_invite(client, "join", label="globex", expires_in=HOUR)

        assert invite["invite"].startswith("tbd_inv_")
        assert invite["kind"] == "join"
        assert invite["label"] == "globex"
        assert invite["org_id"] is None
        assert invite["status"] == "active"

    async def test_only_the_sha256_of_the_secret_is_stored(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        invite = await create_invite(client, "join")
        async with runtime.database.read_only() as session:
            query = text("SELECT digest FROM org_invites WHERE id = :id")
            digest = (await session.execute(query, {"id": invite["id"]})).scalar_one()
        assert digest == hashlib.sha256(invite["invite"].encode()).hexdigest()

    async def test_an_org_key_is_403(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        key = await create_org_key(client, "acme")

        response = await client.post("/v1/invites", json={"kind": "join"}, headers=bearer(key))

        assert response.status_code == 403, response.text
        assert response.json()["code"] == "NOT_PERMITTED"
        assert (await client.get("/v1/invites", headers=ADMIN)).json() == []

    async def test_a_join_invite_naming_an_org_is_422(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        body = {"kind": "join", "org_id": "acme"}
        response = await client.post("/v1/invites", json=body, headers=ADMIN)
        assert response.status_code == 422, response.text

    async def test_an_attach_invite_without_an_org_is_422(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/v1/invites", json={"kind": "attach"}, headers=ADMIN)
        assert response.status_code == 422, response.text

    async def test_an_attach_invite_for_an_unknown_org_is_404(
        self, client: httpx.AsyncClient
    ) -> None:
        body = {"kind": "attach", "org_id": "ghost"}
        response = await client.post("/v1/invites", json=body, headers=ADMIN)
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "ORG_NOT_FOUND"
        assert (await client.get("/v1/invites", headers=ADMIN)).json() == []

    async def test_an_attach_invite_for_a_suspended_org_is_409(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "globex")
        assert (await client.post("/v1/orgs/globex/suspend", headers=ADMIN)).status_code == 200
        body = {"kind": "attach", "org_id": "globex"}
        response = await client.post("/v1/invites", json=body, headers=ADMIN)
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "ORG_STATE_CONFLICT"
        assert (await client.get("/v1/invites", headers=ADMIN)).json() == []

    @pytest.mark.parametrize("seconds", [HOUR, YEAR])
    async def test_expiry_at_the_bounds_is_accepted(
        self, client: httpx.AsyncClient, seconds: int
    ) -> None:
        invite = await create_invite(client, "join", expires_in=seconds)
        created = datetime.fromisoformat(invite["created_at"])
        expires = datetime.fromisoformat(invite["expires_at"])
        assert expires - created == timedelta(seconds=seconds)

    @pytest.mark.parametrize("seconds", [HOUR - 1, YEAR + 1])
    async def test_expiry_outside_the_bounds_is_422(
        self, client: httpx.AsyncClient, seconds: int
    ) -> None:
        body = {"kind": "join", "expires_in": seconds}
        response = await client.post("/v1/invites", json=body, headers=ADMIN)
        assert response.status_code == 422, response.text
        assert response.json()["detail"].startswith("body.expires_in")


class TestReadInvites:
    async def test_list_and_get_never_show_the_secret(self, client: httpx.AsyncClient) -> None:
        invite = await create_invite(client, "join", label="globex")

        listed = await client.get("/v1/invites", headers=ADMIN)
        one = await client.get(f"/v1/invites/{invite['id']}", headers=ADMIN)

        assert [item["id"] for item in listed.json()] == [invite["id"]]
        for response in (listed, one):
            assert response.status_code == 200, response.text
            assert invite["invite"] not in response.text
        assert "invite" not in one.json()
        assert one.json()["label"] == "globex"

    async def test_an_org_key_cannot_read_invites(self, client: httpx.AsyncClient) -> None:
        invite = await create_invite(client, "join")
        await create_org(client, "acme")
        key = bearer(await create_org_key(client, "acme"))
        assert (await client.get("/v1/invites", headers=key)).status_code == 403
        assert (await client.get(f"/v1/invites/{invite['id']}", headers=key)).status_code == 403

    async def test_unknown_invite_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/invites/no-such-invite", headers=ADMIN)
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "INVITE_NOT_FOUND"


class TestInviteStatus:
    async def test_an_invite_expires_at_its_expiry(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        invite = await create_invite(client, "join", expires_in=HOUR)
        clock.advance(HOUR - 1)
        assert await invite_status(client, invite["id"]) == "active"
        clock.advance(1)
        assert await invite_status(client, invite["id"]) == "expired"

    async def test_a_used_invite_is_used(self, client: httpx.AsyncClient) -> None:
        invite = await create_invite(client, "join")
        assert (await join(client, invite["invite"])).status_code == 201
        assert await invite_status(client, invite["id"]) == "used"
        read = await client.get(f"/v1/invites/{invite['id']}", headers=ADMIN)
        assert read.json()["org_id"] == "globex"


class TestRevokeInvite:
    async def test_delete_revokes_and_twice_is_409(self, client: httpx.AsyncClient) -> None:
        invite = await create_invite(client, "join")

        first = await client.delete(f"/v1/invites/{invite['id']}", headers=ADMIN)
        again = await client.delete(f"/v1/invites/{invite['id']}", headers=ADMIN)

        assert first.status_code == 204, first.text
        assert await invite_status(client, invite["id"]) == "revoked"
        assert again.status_code == 409, again.text
        assert again.json()["code"] == "INVITE_STATE_CONFLICT"

    async def test_a_used_invite_cannot_be_revoked(self, client: httpx.AsyncClient) -> None:
        invite = await create_invite(client, "join")
        assert (await join(client, invite["invite"])).status_code == 201

        response = await client.delete(f"/v1/invites/{invite['id']}", headers=ADMIN)

        assert response.status_code == 409, response.text
        assert response.json()["code"] == "INVITE_STATE_CONFLICT"
        assert await invite_status(client, invite["id"]) == "used"


class TestInspectInvite:
    async def test_inspecting_tells_what_it_is_for_and_does_not_use_it(
        self, client: httpx.AsyncClient
    ) -> None:
        invite = await create_invite(client, "join", label="globex")
        for _ in range(2):
            response = await client.post(
                "/v1/onboarding/inspect", json={"invite": invite["invite"]}
            )
            assert response.status_code == 200, response.text
            assert response.json() == {
                "kind": "join",
                "label": "globex",
                "org_id": None,
                "expires_at": invite["expires_at"],
            }
        assert await invite_status(client, invite["id"]) == "active"
        assert (await join(client, invite["invite"])).status_code == 201

    async def test_an_unknown_invite_is_invalid(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/v1/onboarding/inspect", json={"invite": "tbd_inv_nope"})
        assert_invite_invalid(response)

    async def test_a_used_invite_is_invalid(self, client: httpx.AsyncClient) -> None:
        invite = await create_invite(client, "join")
        assert (await join(client, invite["invite"])).status_code == 201
        response = await client.post("/v1/onboarding/inspect", json={"invite": invite["invite"]})
        assert_invite_invalid(response)

    async def test_an_expired_invite_is_invalid(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        invite = await create_invite(client, "join", expires_in=HOUR)
        clock.advance(HOUR)
        response = await client.post("/v1/onboarding/inspect", json={"invite": invite["invite"]})
        assert_invite_invalid(response)
