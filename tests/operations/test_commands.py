"""Commands on the operators' side: creating (validation, idempotency, prepare, fan-out) and
reading, each tenant confined to its own."""

from __future__ import annotations

import asyncio
from datetime import datetime

import httpx
import pytest

from tabard.core.clock import FrozenClock
from tests.conftest import ADMIN, bearer, create_org_key
from tests.operations.command_support import (
    Agent,
    create,
    create_command,
    enrolled_agent,
    failed,
    heartbeat,
    invalid_fields,
    problem_code,
    read_command,
    succeeded,
)

PARAMS = {"db": "main"}


class TestCreating:
    async def test_a_new_command_is_pending_with_ten_minutes_to_live(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)

        command = await create_command(client, agent, action="backup", params=PARAMS)

        assert command["state"] == "PENDING"
        assert command["type"] == "ACTION_EXECUTE"
        assert (command["action"], command["params"]) == ("backup", PARAMS)
        assert (command["agent_id"], command["org_id"]) == (agent.id, "acme")
        assert (command["attempts"], command["max_attempts"]) == (0, 1)
        assert command["leased_to"] is None
        lifetime = datetime.fromisoformat(command["expires_at"]) - datetime.fromisoformat(
            command["created_at"]
        )
        assert lifetime.total_seconds() == 600

    async def test_the_orgs_key_creates_and_is_named_as_creator(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        key = await create_org_key(client, "acme")

        response = await create(client, agent, headers=bearer(key))

        assert response.status_code == 201, response.text
        assert response.json()[0]["created_by"].startswith("org_key:")

    async def test_an_undeclared_action_is_404(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)

        response = await create(client, agent, action="format-disk")

        assert response.status_code == 404, response.text
        assert problem_code(response) == "ACTION_NOT_FOUND"

    async def test_a_parameter_of_the_wrong_type_is_named(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)

        response = await create(client, agent, action="backup", params={"db": 3})

        assert invalid_fields(response) == ["body.params.db"]

    async def test_a_missing_required_parameter_is_named(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)

        response = await create(client, agent, action="backup", params={"full": True})

        assert invalid_fields(response) == ["body.params.db"]

    async def test_nothing_is_created_when_the_params_are_invalid(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)

        await create(client, agent, action="backup", params={"db": 3})

        assert (await client.get(agent.commands_url, headers=ADMIN)).json()["items"] == []

    async def test_an_unknown_agent_is_404(self, client: httpx.AsyncClient) -> None:
        await enrolled_agent(client)

        response = await client.post(
            "/v1/orgs/acme/agents/no-such-agent/commands", json={"action": "restart"}, headers=ADMIN
        )

        assert response.status_code == 404, response.text


class TestIdempotencyKey:
    async def test_the_same_key_again_answers_200_with_the_same_command(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        first = await create_command(client, agent, idempotency_key="deploy-42")

        again = await create(client, agent, idempotency_key="deploy-42")

        assert again.status_code == 200, again.text
        assert [item["id"] for item in again.json()] == [first["id"]]
        listed = (await client.get(agent.commands_url, headers=ADMIN)).json()["items"]
        assert [item["id"] for item in listed] == [first["id"]]

    async def test_another_key_creates_another_command(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        first = await create_command(client, agent, idempotency_key="deploy-42")

        second = await create_command(client, agent, idempotency_key="deploy-43")

        assert second["id"] != first["id"]

    async def test_concurrent_requests_with_one_key_create_one_command(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)

        responses = await asyncio.gather(
            *(create(client, agent, idempotency_key="deploy-42") for _ in range(4))
        )

        assert sorted(r.status_code for r in responses) == [200, 200, 200, 201], responses
        assert len({r.json()[0]["id"] for r in responses}) == 1
        listed = (await client.get(agent.commands_url, headers=ADMIN)).json()["items"]
        assert len(listed) == 1


class TestRequiresPrepare:
    async def prepared(
        self, client: httpx.AsyncClient, agent: Agent, params: dict[str, str]
    ) -> str:
        """A succeeded ACTION_PREPARE of `migrate` with `params`."""
        prepare = await succeeded(
            client, agent, type="ACTION_PREPARE", action="migrate", params=params
        )
        assert prepare["state"] == "SUCCEEDED"
        command_id: str = prepare["id"]
        return command_id

    async def test_executing_without_a_prepare_is_409(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)

        response = await create(client, agent, action="migrate", params=PARAMS)

        assert response.status_code == 409, response.text
        assert problem_code(response) == "COMMAND_PREPARE_REQUIRED"

    async def test_a_prepare_needs_no_prepare(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)

        response = await create(
            client, agent, type="ACTION_PREPARE", action="migrate", params=PARAMS
        )

        assert response.status_code == 201, response.text

    async def test_a_succeeded_prepare_of_the_same_params_allows_it(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        prepare_id = await self.prepared(client, agent, PARAMS)

        response = await create(
            client, agent, action="migrate", params=PARAMS, prepare_command_id=prepare_id
        )

        assert response.status_code == 201, response.text
        assert response.json()[0]["prepare_command_id"] == prepare_id

    async def test_a_prepare_of_other_params_is_409(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        prepare_id = await self.prepared(client, agent, {"db": "staging"})

        response = await create(
            client, agent, action="migrate", params=PARAMS, prepare_command_id=prepare_id
        )

        assert response.status_code == 409, response.text
        assert problem_code(response) == "COMMAND_PREPARE_REQUIRED"

    async def test_a_prepare_not_yet_succeeded_is_409(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        prepare = await create_command(
            client, agent, type="ACTION_PREPARE", action="migrate", params=PARAMS
        )

        response = await create(
            client, agent, action="migrate", params=PARAMS, prepare_command_id=prepare["id"]
        )

        assert response.status_code == 409, response.text
        assert problem_code(response) == "COMMAND_PREPARE_REQUIRED"

    async def test_a_succeeded_execute_is_no_prepare(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        # `backup` has the same schema but needs no prepare: its succeeded execution is no dry run.
        execute = await succeeded(client, agent, action="backup", params=PARAMS)

        response = await create(
            client, agent, action="migrate", params=PARAMS, prepare_command_id=execute["id"]
        )

        assert response.status_code == 409, response.text
        assert problem_code(response) == "COMMAND_PREPARE_REQUIRED"


class TestAllInstances:
    async def test_one_command_per_online_instance(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        await heartbeat(client, agent, "i-1")
        await heartbeat(client, agent, "i-2")

        response = await create(client, agent, all_instances=True)

        assert response.status_code == 201, response.text
        commands = response.json()
        assert sorted(command["instance_id"] for command in commands) == ["i-1", "i-2"]
        assert len({command["id"] for command in commands}) == 2

    async def test_an_offline_instance_gets_none(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        await heartbeat(client, agent, "i-old")
        clock.advance(120)  # past the 90 s offline threshold
        await heartbeat(client, agent, "i-1")

        response = await create(client, agent, all_instances=True)

        assert response.status_code == 201, response.text
        assert [command["instance_id"] for command in response.json()] == ["i-1"]

    async def test_an_instance_id_with_all_instances_is_422(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        await heartbeat(client, agent, "i-1")

        response = await create(client, agent, all_instances=True, instance_id="i-1")

        assert response.status_code == 422, response.text

    async def test_no_online_instance_is_409(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)

        response = await create(client, agent, all_instances=True)

        assert response.status_code == 409, response.text
        assert problem_code(response) == "NO_ONLINE_INSTANCE"

    async def test_the_same_key_again_answers_the_same_commands(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        await heartbeat(client, agent, "i-1")
        await heartbeat(client, agent, "i-2")
        first = await create(client, agent, all_instances=True, idempotency_key="fleet-1")

        again = await create(client, agent, all_instances=True, idempotency_key="fleet-1")

        assert again.status_code == 200, again.text
        assert {c["id"] for c in again.json()} == {c["id"] for c in first.json()}


class TestReading:
    async def test_the_list_is_newest_first(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        older = await create_command(client, agent)
        newer = await create_command(client, agent, action="backup", params=PARAMS)

        response = await client.get(agent.commands_url, headers=ADMIN)

        assert response.status_code == 200, response.text
        assert [item["id"] for item in response.json()["items"]] == [newer["id"], older["id"]]

    async def test_one_command_reads_as_created(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        command = await create_command(client, agent)

        assert await read_command(client, agent, command["id"]) == command

    async def test_an_unknown_command_is_404(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)

        response = await client.get(agent.command_url("no-such-command"), headers=ADMIN)

        assert response.status_code == 404, response.text
        assert problem_code(response) == "COMMAND_NOT_FOUND"

    async def test_another_agents_command_is_404_under_this_agent(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        other = await enrolled_agent(client, name="other-bot", create_org_too=False)
        command = await create_command(client, other)

        response = await client.get(agent.command_url(command["id"]), headers=ADMIN)

        assert response.status_code == 404, response.text


def command_routes(agent: Agent, command_id: str) -> list[tuple[str, str, dict[str, str] | None]]:
    """Every operator route of commands: (method, url, body)."""
    return [
        ("POST", agent.commands_url, {"action": "restart"}),
        ("GET", agent.commands_url, None),
        ("GET", agent.command_url(command_id), None),
        ("POST", agent.command_url(command_id) + "/cancel", None),
        ("POST", agent.command_url(command_id) + "/retry", None),
    ]


ROUTE_NAMES = ["create", "list", "read", "cancel", "retry"]


class TestWhoMayOperate:
    @pytest.mark.parametrize("route", range(len(ROUTE_NAMES)), ids=ROUTE_NAMES)
    async def test_another_orgs_key_gets_404(self, client: httpx.AsyncClient, route: int) -> None:
        agent = await enrolled_agent(client)
        command = await failed(client, agent)
        await enrolled_agent(client, "globex", "other-bot")
        key = await create_org_key(client, "globex")
        method, url, body = command_routes(agent, command["id"])[route]

        response = await client.request(method, url, json=body, headers=bearer(key))

        assert response.status_code == 404, response.text
        assert (await read_command(client, agent, command["id"]))["state"] == "FAILED"

    @pytest.mark.parametrize("route", range(len(ROUTE_NAMES)), ids=ROUTE_NAMES)
    async def test_an_agent_token_is_forbidden(self, client: httpx.AsyncClient, route: int) -> None:
        agent = await enrolled_agent(client)
        command = await failed(client, agent)
        method, url, body = command_routes(agent, command["id"])[route]

        response = await client.request(method, url, json=body, headers=agent.headers)

        assert response.status_code == 403, response.text
        listed = (await client.get(agent.commands_url, headers=ADMIN)).json()["items"]
        assert [item["id"] for item in listed] == [command["id"]]
