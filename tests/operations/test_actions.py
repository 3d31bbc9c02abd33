"""Actions: what an agent declares it can run (PUT /v1/agent/actions), as operators list them."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ADMIN, bearer, create_org_key
from tests.operations.command_support import (
    ACTIONS,
    BACKUP_SCHEMA,
    declare,
    enrolled_agent,
    invalid_fields,
    problem_code,
)


async def listed(client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    response = await client.get(f"{url}/actions", headers=ADMIN)
    assert response.status_code == 200, response.text
    actions: list[dict[str, Any]] = response.json()
    return actions


class TestWhoMayDeclare:
    async def test_the_agents_own_access_token_declares(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client, actions=[])

        response = await declare(client, agent, [{"name": "restart"}])

        assert response.status_code == 200, response.text
        assert [action["name"] for action in response.json()] == ["restart"]

    async def test_an_org_key_is_forbidden(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client, actions=[])
        key = await create_org_key(client, "acme")

        response = await client.put(
            "/v1/agent/actions", json={"actions": [{"name": "restart"}]}, headers=bearer(key)
        )

        assert response.status_code == 403, response.text
        assert await listed(client, agent.url) == []

    async def test_the_admin_is_forbidden(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client, actions=[])

        response = await client.put(
            "/v1/agent/actions", json={"actions": [{"name": "restart"}]}, headers=ADMIN
        )

        assert response.status_code == 403, response.text
        assert await listed(client, agent.url) == []


class TestDeclaring:
    async def test_the_declared_set_is_listed_with_every_field(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)

        actions = await listed(client, agent.url)

        assert [action["name"] for action in actions] == ["backup", "migrate", "restart"]
        backup = actions[0]
        assert backup["description"] == "Back up a database"
        assert backup["params_schema"] == BACKUP_SCHEMA
        assert backup["dangerous"] is False
        assert backup["requires_prepare"] is False
        assert backup["declared_at"]
        assert actions[1]["requires_prepare"] is True

    async def test_an_action_without_a_schema_takes_any_object(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)

        restart = next(a for a in await listed(client, agent.url) if a["name"] == "restart")

        assert restart["params_schema"] == {"type": "object"}

    async def test_a_new_declaration_replaces_the_previous_set(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)

        response = await declare(
            client, agent, [{"name": "restart", "dangerous": True}, {"name": "rotate-logs"}]
        )

        assert response.status_code == 200, response.text
        actions = await listed(client, agent.url)
        assert [action["name"] for action in actions] == ["restart", "rotate-logs"]
        assert actions[0]["dangerous"] is True

    async def test_an_empty_declaration_removes_every_action(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)

        response = await declare(client, agent, [])

        assert response.status_code == 200, response.text
        assert await listed(client, agent.url) == []

    async def test_each_agent_has_its_own_set(self, client: httpx.AsyncClient) -> None:
        first = await enrolled_agent(client)
        second = await enrolled_agent(
            client, name="other-bot", create_org_too=False, actions=[{"name": "restart"}]
        )

        assert [a["name"] for a in await listed(client, second.url)] == ["restart"]
        assert len(await listed(client, first.url)) == len(ACTIONS)

    async def test_the_declaration_is_audited(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)

        response = await client.get(
            "/v1/audit", params={"org": "acme", "action": "agent.actions.declared"}, headers=ADMIN
        )

        assert response.status_code == 200, response.text
        [event] = response.json()["items"]
        assert event["target"] == agent.id
        assert event["details"]["actions"] == ["backup", "restart", "migrate"]


class TestInvalidDeclarations:
    async def test_duplicate_names_are_refused(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)

        response = await declare(client, agent, [{"name": "restart"}, {"name": "restart"}])

        assert invalid_fields(response) == ["body.actions"]
        assert problem_code(response) == "VALIDATION_FAILED"
        assert len(await listed(client, agent.url)) == len(ACTIONS)

    async def test_an_invalid_json_schema_is_refused_naming_its_action(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        broken = {"name": "broken", "params_schema": {"type": "no-such-type"}}

        response = await declare(client, agent, [{"name": "restart"}, broken])

        assert invalid_fields(response) == ["body.actions.1.params_schema"]
        assert len(await listed(client, agent.url)) == len(ACTIONS)

    async def test_a_badly_formed_name_is_refused(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)

        response = await declare(client, agent, [{"name": "Restart Now"}])

        assert invalid_fields(response) == ["body.actions.0.name"]


class TestListing:
    async def test_another_orgs_key_gets_404(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        await enrolled_agent(client, "globex", "other-bot")
        key = await create_org_key(client, "globex")

        response = await client.get(f"{agent.url}/actions", headers=bearer(key))

        assert response.status_code == 404, response.text

    async def test_the_orgs_own_key_lists(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        key = await create_org_key(client, "acme")

        response = await client.get(f"{agent.url}/actions", headers=bearer(key))

        assert response.status_code == 200, response.text
        assert len(response.json()) == len(ACTIONS)

    async def test_an_agent_token_is_forbidden(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)

        response = await client.get(f"{agent.url}/actions", headers=agent.headers)

        assert response.status_code == 403, response.text

    async def test_an_unknown_agent_is_404(self, client: httpx.AsyncClient) -> None:
        await enrolled_agent(client)

        response = await client.get("/v1/orgs/acme/agents/no-such-agent/actions", headers=ADMIN)

        assert response.status_code == 404, response.text
