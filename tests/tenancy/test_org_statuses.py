"""The org lifecycle through the HTTP API: `pending → active | rejected`, `active ⇄ suspended`.

Only an active org authenticates: its keys work, agents may be created and may log in. Every
other move is a 409 naming the org's state and the state the move needs.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from tabard.core.runtime import Runtime
from tests.conftest import ADMIN, bearer, create_org, create_org_key
from tests.tokens.oauth_checks import assert_invalid_client, denial_reasons
from tests.tokens.support import agent_client, request_token
from tests.trust.support import audit_events, joined_org, org_status

STATUSES = ("pending", "active", "rejected", "suspended")
# move → (the status it needs, the status it leads to, its audit event)
MOVES = {
    "approve": ("pending", "active", "org.approved"),
    "reject": ("pending", "rejected", "org.rejected"),
    "suspend": ("active", "suspended", "org.suspended"),
    "reactivate": ("suspended", "active", "org.reactivated"),
}


async def org_in(client: httpx.AsyncClient, status: str, org_id: str = "globex") -> str:
    """An org in `status`, reached through the API; returns its first key's secret."""
    if status in ("pending", "rejected"):
        key = await joined_org(client, org_id)
        if status == "rejected":
            assert (await move(client, org_id, "reject")).status_code == 200
        return key
    await create_org(client, org_id)
    key = await create_org_key(client, org_id)
    if status == "suspended":
        assert (await move(client, org_id, "suspend")).status_code == 200
    return key


async def move(client: httpx.AsyncClient, org_id: str, action: str) -> httpx.Response:
    return await client.post(f"/v1/orgs/{org_id}/{action}", headers=ADMIN)


class TestTransitions:
    @pytest.mark.parametrize("action", list(MOVES))
    async def test_each_move_from_its_state_succeeds_and_is_audited(
        self, client: httpx.AsyncClient, action: str
    ) -> None:
        source, target, event = MOVES[action]
        await org_in(client, source)

        response = await move(client, "globex", action)

        assert response.status_code == 200, response.text
        assert response.json()["status"] == target
        assert await org_status(client, "globex") == target
        events = await audit_events(client, event, "globex")
        assert [e["details"] for e in events] == [{"status": target}]

    @pytest.mark.parametrize(
        ("action", "status"),
        [(a, s) for a, (source, _, _) in MOVES.items() for s in STATUSES if s != source],
    )
    async def test_a_move_from_any_other_state_is_409_naming_both(
        self, client: httpx.AsyncClient, action: str, status: str
    ) -> None:
        await org_in(client, status)

        response = await move(client, "globex", action)

        assert response.status_code == 409, response.text
        problem = response.json()
        assert problem["code"] == "ORG_STATE_CONFLICT"
        source, target, _ = MOVES[action]
        assert f"is {status};" in problem["detail"]
        assert f"only a {source} organization can become {target}" in problem["detail"]
        assert await org_status(client, "globex") == status

    async def test_unknown_org_is_404(self, client: httpx.AsyncClient) -> None:
        response = await move(client, "ghost", "approve")
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "ORG_NOT_FOUND"

    @pytest.mark.parametrize("action", list(MOVES))
    async def test_an_org_key_may_not_move_its_org(
        self, client: httpx.AsyncClient, action: str
    ) -> None:
        key = await org_in(client, "active")

        response = await client.post(f"/v1/orgs/globex/{action}", headers=bearer(key))

        assert response.status_code == 403, response.text
        assert response.json()["code"] == "NOT_PERMITTED"
        assert await org_status(client, "globex") == "active"


class TestOrgKeyAuthentication:
    @pytest.mark.parametrize(
        ("status", "code"),
        [
            ("suspended", "ORG_SUSPENDED"),
            ("pending", "ORG_NOT_ACTIVE"),
            ("rejected", "ORG_NOT_ACTIVE"),
        ],
    )
    async def test_a_key_of_an_org_that_is_not_active_is_403(
        self, client: httpx.AsyncClient, status: str, code: str
    ) -> None:
        key = await org_in(client, status)

        response = await client.get("/v1/orgs/globex", headers=bearer(key))

        assert response.status_code == 403, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == code

    async def test_a_key_of_an_active_org_works(self, client: httpx.AsyncClient) -> None:
        key = await org_in(client, "active")
        response = await client.get("/v1/me", headers=bearer(key))
        assert response.status_code == 200, response.text
        assert response.json()["org_id"] == "globex"

    async def test_reactivating_restores_the_key(self, client: httpx.AsyncClient) -> None:
        key = await org_in(client, "suspended")
        assert (await move(client, "globex", "reactivate")).status_code == 200
        assert (await client.get("/v1/me", headers=bearer(key))).status_code == 200


class TestCreatingAgents:
    @pytest.mark.parametrize(
        ("status", "code"),
        [
            ("pending", "ORG_NOT_ACTIVE"),
            ("rejected", "ORG_NOT_ACTIVE"),
            ("suspended", "ORG_SUSPENDED"),
        ],
    )
    async def test_the_admin_cannot_create_agents_in_an_org_that_is_not_active(
        self, client: httpx.AsyncClient, status: str, code: str
    ) -> None:
        await org_in(client, status)

        response = await client.post(
            "/v1/orgs/globex/agents", json={"name": "early-bot"}, headers=ADMIN
        )

        assert response.status_code == 403, response.text
        assert response.json()["code"] == code
        listed = await client.get("/v1/orgs/globex/agents", headers=ADMIN)
        assert listed.json()["items"] == []

    async def test_an_approved_org_creates_agents_with_its_first_key(
        self, client: httpx.AsyncClient
    ) -> None:
        key = await org_in(client, "pending")
        assert (await move(client, "globex", "approve")).status_code == 200

        response = await client.post(
            "/v1/orgs/globex/agents", json={"name": "first-bot"}, headers=bearer(key)
        )

        assert response.status_code == 201, response.text


class TestAgentLogins:
    async def test_a_suspended_orgs_agents_are_refused_at_the_token_endpoint(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await agent_client(client, "acme")
        assert (await request_token(client, agent)).status_code == 200
        assert (await move(client, "acme", "suspend")).status_code == 200

        assert_invalid_client(await request_token(client, agent))

    @pytest.mark.parametrize("status", ["pending", "rejected"])
    async def test_a_pending_or_rejected_orgs_agents_are_refused_at_the_token_endpoint(
        self, client: httpx.AsyncClient, runtime: Runtime, status: str
    ) -> None:
        # No API route puts agents into such an org (creating them is refused), so the org is
        # moved back behind the API's back to check the token endpoint's own guard.
        agent = await agent_client(client, "acme")
        async with runtime.database.unit_of_work() as session:
            statement = text("UPDATE organizations SET status = :status WHERE id = 'acme'")
            await session.execute(statement, {"status": status})

        assert_invalid_client(await request_token(client, agent))
        assert await denial_reasons(client, "acme") == [f"org_{status}"]
