"""Onboarding through the HTTP API: organizations join with an invite (pending until the admin
approves) or attach (an org the admin created receives its CA and first key).

An unusable invite is 403 `INVITE_INVALID` and changes nothing; the use and everything it creates
commit together; of two concurrent uses exactly one wins.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tabard.core.clock import FrozenClock
from tabard.core.runtime import Runtime
from tests.conftest import ADMIN, bearer, create_org
from tests.trust.support import (
    HOUR,
    assert_invite_invalid,
    attach,
    create_invite,
    invite_status,
    join,
    org_status,
    row_counts,
)


class TestJoin:
    async def test_join_creates_a_pending_org_with_its_contact_and_a_key(
        self, client: httpx.AsyncClient
    ) -> None:
        invite = await create_invite(client, "join")

        response = await join(client, invite["invite"], "globex")

        assert response.status_code == 201, response.text
        body = response.json()
        assert body["org"]["id"] == "globex"
        assert body["org"]["status"] == "pending"
        assert body["ca"] is None
        read = (await client.get("/v1/orgs/globex", headers=ADMIN)).json()
        assert read["status"] == "pending"
        assert read["contact"] == {"name": "Hank Scorpio", "email": "hank@globex.example"}
        assert body["api_key"]["secret"].startswith("tbd_org_")

    async def test_the_key_works_only_once_the_org_is_approved(
        self, client: httpx.AsyncClient
    ) -> None:
        invite = await create_invite(client, "join")
        key = bearer((await join(client, invite["invite"])).json()["api_key"]["secret"])
        pending = await client.get("/v1/me", headers=key)
        assert pending.status_code == 403, pending.text
        assert pending.json()["code"] == "ORG_NOT_ACTIVE"

        approved = await client.post("/v1/orgs/globex/approve", headers=ADMIN)

        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "active"
        assert (await client.get("/v1/me", headers=key)).status_code == 200

    async def test_a_rejected_orgs_key_never_works(self, client: httpx.AsyncClient) -> None:
        invite = await create_invite(client, "join")
        key = bearer((await join(client, invite["invite"])).json()["api_key"]["secret"])

        rejected = await client.post("/v1/orgs/globex/reject", headers=ADMIN)

        assert rejected.status_code == 200, rejected.text
        assert await org_status(client, "globex") == "rejected"
        denied = await client.get("/v1/me", headers=key)
        assert denied.status_code == 403, denied.text
        assert denied.json()["code"] == "ORG_NOT_ACTIVE"

    async def test_a_join_with_a_ca_gives_the_org_that_ca(self, client: httpx.AsyncClient) -> None:
        invite = await create_invite(client, "join")

        response = await join(client, invite["invite"], ca={"source": "generate"})

        assert response.status_code == 201, response.text
        ca = response.json()["ca"]
        assert ca["org_id"] == "globex"
        cas = (await client.get("/v1/orgs/globex/cas", headers=ADMIN)).json()
        assert [item["id"] for item in cas] == [ca["id"]]

    async def test_a_taken_org_id_is_409_and_the_invite_stays_usable(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "globex")
        invite = await create_invite(client, "join")
        before = await row_counts(runtime)

        taken = await join(client, invite["invite"], "globex")

        assert taken.status_code == 409, taken.text
        assert taken.json()["code"] == "ORG_ALREADY_EXISTS"
        assert await row_counts(runtime) == before
        assert await invite_status(client, invite["id"]) == "active"
        assert (await join(client, invite["invite"], "hooli")).status_code == 201

    async def test_a_failing_ca_undoes_the_whole_join(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        invite = await create_invite(client, "join")
        bad_ca = {"source": "upload", "certificate_pem": "not a certificate"}

        response = await join(client, invite["invite"], ca=bad_ca)

        assert response.status_code == 400, response.text
        assert response.json()["code"] == "INVALID_CA"
        assert await row_counts(runtime) == (0, 0, 0)
        assert await invite_status(client, invite["id"]) == "active"


class TestAttach:
    async def test_the_admin_created_org_gets_its_ca_and_a_working_key(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "initech")
        invite = await create_invite(client, "attach", org_id="initech")

        response = await attach(client, invite["invite"])

        assert response.status_code == 201, response.text
        body = response.json()
        assert body["org"]["id"] == "initech"
        assert body["org"]["status"] == "active"
        assert body["ca"]["org_id"] == "initech"
        key = bearer(body["api_key"]["secret"])
        me = await client.get("/v1/me", headers=key)
        assert me.status_code == 200, me.text
        assert me.json()["org_id"] == "initech"
        cas = (await client.get("/v1/orgs/initech/cas", headers=key)).json()
        assert [item["id"] for item in cas] == [body["ca"]["id"]]
        assert await invite_status(client, invite["id"]) == "used"


class TestUnusableInvites:
    @pytest.fixture
    async def used(self, client: httpx.AsyncClient) -> str:
        invite = await create_invite(client, "join")
        assert (await join(client, invite["invite"], "first")).status_code == 201
        return str(invite["invite"])

    async def test_a_used_invite_is_invalid_and_creates_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime, used: str
    ) -> None:
        before = await row_counts(runtime)
        assert_invite_invalid(await join(client, used, "second"))
        assert await row_counts(runtime) == before

    async def test_an_expired_invite_is_invalid_and_creates_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        invite = await create_invite(client, "join", expires_in=HOUR)
        clock.advance(HOUR)
        assert_invite_invalid(await join(client, invite["invite"], ca={"source": "generate"}))
        assert await row_counts(runtime) == (0, 0, 0)

    async def test_a_revoked_invite_is_invalid_and_creates_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        invite = await create_invite(client, "join")
        assert (
            await client.delete(f"/v1/invites/{invite['id']}", headers=ADMIN)
        ).status_code == 204
        assert_invite_invalid(await join(client, invite["invite"], ca={"source": "generate"}))
        assert await row_counts(runtime) == (0, 0, 0)

    async def test_an_unknown_invite_is_invalid_and_creates_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        assert_invite_invalid(await join(client, "tbd_inv_made-up", ca={"source": "generate"}))
        assert_invite_invalid(
            await client.post(
                "/v1/onboarding/attach",
                json={"invite": "tbd_inv_made-up", "ca": {"source": "generate"}},
            )
        )
        assert await row_counts(runtime) == (0, 0, 0)

    async def test_a_join_invite_cannot_attach(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        invite = await create_invite(client, "join")
        assert_invite_invalid(await attach(client, invite["invite"]))
        assert await row_counts(runtime) == (0, 0, 0)
        assert await invite_status(client, invite["id"]) == "active"

    async def test_an_attach_invite_cannot_join(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "initech")
        invite = await create_invite(client, "attach", org_id="initech")
        before = await row_counts(runtime)
        assert_invite_invalid(await join(client, invite["invite"], "globex"))
        assert await row_counts(runtime) == before
        assert await invite_status(client, invite["id"]) == "active"

    async def test_a_used_attach_invite_gives_no_second_key(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "initech")
        invite = await create_invite(client, "attach", org_id="initech")
        assert (await attach(client, invite["invite"])).status_code == 201
        before = await row_counts(runtime)
        assert_invite_invalid(await attach(client, invite["invite"]))
        assert await row_counts(runtime) == before


class TestConcurrentJoins:
    async def test_two_joins_at_once_with_one_invite_create_one_org(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        invite = await create_invite(client, "join")

        responses = await asyncio.gather(
            join(client, invite["invite"], "globex"), join(client, invite["invite"], "hooli")
        )

        assert sorted(r.status_code for r in responses) == [201, 403], [r.text for r in responses]
        loser = next(r for r in responses if r.status_code == 403)
        assert loser.json()["code"] == "INVITE_INVALID"
        assert await row_counts(runtime) == (1, 1, 0)

    async def test_two_replicas_joining_at_once_with_one_invite_create_one_org(
        self, client: httpx.AsyncClient, replica: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        invite = await create_invite(client, "join")

        responses = await asyncio.gather(
            join(client, invite["invite"], "globex"), join(replica, invite["invite"], "hooli")
        )

        assert sorted(r.status_code for r in responses) == [201, 403], [r.text for r in responses]
        winner = next(r for r in responses if r.status_code == 201).json()["org"]["id"]
        assert await row_counts(runtime) == (1, 1, 0)
        read = await client.get(f"/v1/invites/{invite['id']}", headers=ADMIN)
        assert read.json()["org_id"] == winner

    async def test_two_joins_at_once_for_one_org_id_create_it_once(
        self, client: httpx.AsyncClient, replica: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        first, second = await create_invite(client, "join"), await create_invite(client, "join")

        responses = await asyncio.gather(
            join(client, first["invite"], "globex"), join(replica, second["invite"], "globex")
        )

        assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
        assert await row_counts(runtime) == (1, 1, 0)
        statuses = sorted(
            [await invite_status(client, first["id"]), await invite_status(client, second["id"])]
        )
        assert statuses == ["active", "used"]
