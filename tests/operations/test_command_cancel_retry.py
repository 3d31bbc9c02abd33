"""Moving a command on from the operators' side: cancelling a pending one, retrying a failed or
expired execution."""

from __future__ import annotations

import asyncio

import httpx

from tabard.core.clock import FrozenClock
from tests.conftest import ADMIN
from tests.operations.command_support import (
    Agent,
    create_command,
    dispatched,
    enrolled_agent,
    failed,
    poll,
    problem_code,
    read_command,
    report,
    succeeded,
)

PARAMS = {"db": "main"}


class TestCancelling:
    async def test_a_pending_command_is_cancelled_and_never_delivered(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        command = await create_command(client, agent)

        response = await client.post(agent.command_url(command["id"]) + "/cancel", headers=ADMIN)

        assert response.status_code == 200, response.text
        assert response.json()["state"] == "CANCELLED"
        assert response.json()["finished_at"] is not None
        assert await poll(client, agent) == []
        assert (await read_command(client, agent, command["id"]))["state"] == "CANCELLED"

    async def test_a_dispatched_command_cannot_be_cancelled(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent)

        response = await client.post(agent.command_url(command["id"]) + "/cancel", headers=ADMIN)

        assert response.status_code == 409, response.text
        assert problem_code(response) == "COMMAND_INVALID_TRANSITION"
        assert (await report(client, agent, command["id"])).status_code == 200

    async def test_a_finished_command_cannot_be_cancelled(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        command = await succeeded(client, agent)

        response = await client.post(agent.command_url(command["id"]) + "/cancel", headers=ADMIN)

        assert response.status_code == 409, response.text
        assert problem_code(response) == "COMMAND_ALREADY_COMPLETED"

    async def test_an_expired_command_cannot_be_cancelled(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        command = await create_command(client, agent, expires_in=30)
        clock.advance(31)

        response = await client.post(agent.command_url(command["id"]) + "/cancel", headers=ADMIN)

        assert response.status_code == 409, response.text
        assert problem_code(response) == "COMMAND_ALREADY_COMPLETED"

    async def test_a_cancel_racing_a_poll_never_lets_both_win(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        for _ in range(5):
            created = [await create_command(client, agent) for _ in range(15)]

            polled, *cancels = await asyncio.gather(
                poll(client, agent, limit=15),
                *(
                    client.post(agent.command_url(c["id"]) + "/cancel", headers=ADMIN)
                    for c in created
                ),
            )

            delivered = {command["id"] for command in polled}
            cancelled = {c["id"] for c, r in zip(created, cancels, strict=True) if r.is_success}
            assert delivered.isdisjoint(cancelled)
            assert delivered | cancelled == {command["id"] for command in created}


class TestRetrying:
    async def retry(
        self, client: httpx.AsyncClient, agent: Agent, command_id: str
    ) -> httpx.Response:
        return await client.post(agent.command_url(command_id) + "/retry", headers=ADMIN)

    async def test_a_failed_execution_gets_a_new_linked_command(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        original = await failed(client, agent, action="backup", params=PARAMS, instance_id="i-1")

        response = await self.retry(client, agent, original["id"])

        assert response.status_code == 201, response.text
        retried = response.json()
        assert retried["id"] != original["id"]
        assert retried["retry_of"] == original["id"]
        assert (retried["state"], retried["attempts"]) == ("PENDING", 0)
        assert (retried["action"], retried["params"]) == ("backup", PARAMS)
        assert retried["instance_id"] == original["instance_id"] == "i-1"
        assert [item["id"] for item in await poll(client, agent)] == [retried["id"]]

    async def test_an_expired_execution_gets_a_new_linked_command(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        original = await create_command(client, agent, expires_in=30)
        clock.advance(31)

        response = await self.retry(client, agent, original["id"])

        assert response.status_code == 201, response.text
        assert response.json()["retry_of"] == original["id"]
        assert response.json()["state"] == "PENDING"

    async def test_a_succeeded_command_is_not_retryable(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        command = await succeeded(client, agent)

        response = await self.retry(client, agent, command["id"])

        assert response.status_code == 409, response.text
        assert problem_code(response) == "COMMAND_NOT_RETRYABLE"

    async def test_a_failed_prepare_is_not_retryable(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        command = await failed(
            client, agent, type="ACTION_PREPARE", action="migrate", params=PARAMS
        )

        response = await self.retry(client, agent, command["id"])

        assert response.status_code == 409, response.text
        assert problem_code(response) == "COMMAND_NOT_RETRYABLE"

    async def test_a_pending_command_is_not_retryable(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        command = await create_command(client, agent)

        response = await self.retry(client, agent, command["id"])

        assert response.status_code == 409, response.text
        assert problem_code(response) == "COMMAND_NOT_RETRYABLE"
        listed = (await client.get(agent.commands_url, headers=ADMIN)).json()["items"]
        assert [item["id"] for item in listed] == [command["id"]]
