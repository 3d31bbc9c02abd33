"""Delivering commands to an agent's instances: polls and long-polls, leases given exactly once
(also across replicas), leases that lapse, and commands that expire."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tabard.core.clock import FrozenClock
from tabard.core.runtime import Runtime
from tests.conftest import ADMIN, bearer, create_org_key
from tests.operations.command_support import (
    Agent,
    create_command,
    dispatched,
    enrolled_agent,
    operations,
    poll,
    problem_code,
    read_command,
    report,
    running,
    stored_command,
)


async def parked(client: httpx.AsyncClient, agent: Agent) -> None:
    """Return once a long-poll of `agent` is waiting for a wake-up in the app behind `client`."""
    signals = operations(client).signals
    deadline = time.monotonic() + 5
    while agent.id not in signals._waiters:  # the only sign that a poll is parked
        assert time.monotonic() < deadline, "the long-poll never started waiting"
        await asyncio.sleep(0.01)


async def drain(clients: list[tuple[httpx.AsyncClient, str]], agent: Agent) -> dict[str, list[str]]:
    """Poll concurrently from every (app, instance) until none gets anything: the ids each
    instance was given."""
    given: dict[str, list[str]] = {instance: [] for _, instance in clients}
    while True:
        rounds = await asyncio.gather(
            *(poll(http, agent, instance, limit=3) for http, instance in clients)
        )
        if not any(rounds):
            return given
        for (_, instance), commands in zip(clients, rounds, strict=True):
            given[instance] += [command["id"] for command in commands]


def assert_exactly_once(given: dict[str, list[str]], created: list[dict[str, Any]]) -> None:
    every = [command_id for ids in given.values() for command_id in ids]
    assert sorted(every) == sorted(command["id"] for command in created)
    assert len(set(every)) == len(every), given


class TestPolling:
    async def test_a_poll_leases_the_command_to_the_instance(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        command = await create_command(client, agent)

        [polled] = await poll(client, agent, "i-1")

        assert polled["id"] == command["id"]
        assert (polled["state"], polled["leased_to"], polled["attempts"]) == (
            "DISPATCHED",
            "i-1",
            1,
        )
        assert polled["dispatched_at"] is not None
        assert (await read_command(client, agent, command["id"]))["state"] == "DISPATCHED"

    async def test_a_leased_command_is_not_offered_again(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        await dispatched(client, agent, "i-1")

        assert await poll(client, agent, "i-1") == []
        assert await poll(client, agent, "i-2") == []

    async def test_oldest_first_and_at_most_the_limit(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        created = [await create_command(client, agent) for _ in range(3)]

        first = await poll(client, agent, limit=2)
        rest = await poll(client, agent, limit=2)

        assert [c["id"] for c in first + rest] == [c["id"] for c in created]
        assert len(first) == 2

    async def test_a_command_for_one_instance_is_never_given_to_another(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        command = await create_command(client, agent, instance_id="i-x")

        assert await poll(client, agent, "i-y") == []
        assert [c["id"] for c in await poll(client, agent, "i-x")] == [command["id"]]

    async def test_nothing_pending_with_wait_0_answers_at_once(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)

        started = time.monotonic()
        commands = await poll(client, agent, wait=0)

        assert commands == []
        assert time.monotonic() - started < 1

    async def test_another_agents_commands_are_not_given(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        other = await enrolled_agent(client, name="other-bot", create_org_too=False)
        command = await create_command(client, agent)

        assert await poll(client, other, "i-1") == []
        assert (await read_command(client, agent, command["id"]))["state"] == "PENDING"

    async def test_an_org_key_cannot_poll(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        await create_command(client, agent)
        key = await create_org_key(client, "acme")

        response = await client.get(
            "/v1/agent/commands", params={"instance_id": "i-1"}, headers=bearer(key)
        )

        assert response.status_code == 403, response.text
        assert (await client.get(agent.commands_url, headers=ADMIN)).json()["items"][0][
            "state"
        ] == "PENDING"


class TestLongPolling:
    async def test_a_waiting_poll_answers_as_soon_as_a_command_is_created(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        waiting = asyncio.create_task(poll(client, agent, "i-1", wait=10))
        await parked(client, agent)

        created_at = time.monotonic()
        command = await create_command(client, agent)
        commands = await asyncio.wait_for(waiting, timeout=10)

        # Well before the poll's own periodic look (every 5 s), let alone its 10 s.
        assert time.monotonic() - created_at < 2
        assert [c["id"] for c in commands] == [command["id"]]

    async def test_a_waiting_poll_answers_a_retried_command(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        failed = await dispatched(client, agent)
        assert (await report(client, agent, failed["id"], status="FAILED")).status_code == 200
        waiting = asyncio.create_task(poll(client, agent, "i-1", wait=10))
        await parked(client, agent)

        started = time.monotonic()
        retried = await client.post(agent.command_url(failed["id"]) + "/retry", headers=ADMIN)
        commands = await asyncio.wait_for(waiting, timeout=10)

        assert time.monotonic() - started < 2
        assert [c["id"] for c in commands] == [retried.json()["id"]]

    async def test_a_command_for_another_instance_is_not_given_to_a_waiting_poll(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        waiting = asyncio.create_task(poll(client, agent, "i-1", wait=1))
        await parked(client, agent)

        await create_command(client, agent, instance_id="i-2")

        assert await asyncio.wait_for(waiting, timeout=10) == []
        assert len(await poll(client, agent, "i-2")) == 1


class TestExactlyOnce:
    async def test_concurrent_polls_of_two_instances_share_the_commands(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        created = [await create_command(client, agent) for _ in range(8)]

        given = await drain([(client, "i-1"), (client, "i-2")], agent)

        assert_exactly_once(given, created)
        for instance, ids in given.items():
            for command_id in ids:
                assert (await read_command(client, agent, command_id))["leased_to"] == instance

    async def test_concurrent_polls_through_two_replicas_share_the_commands(
        self, client: httpx.AsyncClient, replica: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        created = [await create_command(client, agent) for _ in range(12)]
        pollers = [(client, "i-1"), (replica, "i-2"), (client, "i-3"), (replica, "i-4")]

        given = await drain(pollers, agent)

        assert_exactly_once(given, created)


class TestLeaseExpiry:
    async def test_a_lapsed_lease_is_offered_again_while_attempts_remain(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent, "i-1", lease_seconds=5, max_attempts=2)
        clock.advance(6)

        [again] = await poll(client, agent, "i-2")

        assert again["id"] == command["id"]
        assert (again["leased_to"], again["attempts"]) == ("i-2", 2)

    async def test_a_lease_not_yet_lapsed_is_not_offered_again(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        await dispatched(client, agent, "i-1", lease_seconds=5, max_attempts=2)
        clock.advance(4)

        assert await poll(client, agent, "i-2") == []

    async def test_running_renews_the_lease(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent, "i-1", lease_seconds=5, max_attempts=2)
        clock.advance(4)
        assert (await running(client, agent, command["id"])).status_code == 200
        clock.advance(4)
        assert (await running(client, agent, command["id"])).status_code == 200
        clock.advance(4)

        assert await poll(client, agent, "i-2") == []
        assert (await report(client, agent, command["id"])).status_code == 200

    async def test_the_instance_that_lost_the_lease_cannot_answer(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent, "i-1", lease_seconds=5, max_attempts=2)
        clock.advance(6)
        await poll(client, agent, "i-2")

        response = await report(client, agent, command["id"], "i-1")

        assert response.status_code == 409, response.text
        assert problem_code(response) == "COMMAND_INVALID_TRANSITION"

    async def test_the_last_attempt_fails_at_the_sweep(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent, "i-1", lease_seconds=5, max_attempts=2)
        clock.advance(6)
        await poll(client, agent, "i-2")
        clock.advance(6)

        assert await operations(client).sweep_commands() == 1

        failed = await read_command(client, agent, command["id"])
        assert failed["state"] == "FAILED"
        assert failed["error"]["code"] == "LEASE_EXPIRED"
        assert (failed["attempts"], failed["leased_to"]) == (2, None)
        assert await poll(client, agent, "i-3") == []

    async def test_the_last_attempt_fails_at_the_next_poll(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent, "i-1", lease_seconds=5, max_attempts=2)
        clock.advance(6)
        await poll(client, agent, "i-2")
        clock.advance(6)

        assert await poll(client, agent, "i-3") == []

        failed = await read_command(client, agent, command["id"])
        assert (failed["state"], failed["error"]["code"]) == ("FAILED", "LEASE_EXPIRED")

    async def test_a_single_attempt_fails_when_its_lease_lapses(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent, "i-1", lease_seconds=5)
        assert (await running(client, agent, command["id"])).status_code == 200
        clock.advance(6)

        assert await poll(client, agent, "i-1") == []

        failed = await read_command(client, agent, command["id"])
        assert (failed["state"], failed["error"]["code"]) == ("FAILED", "LEASE_EXPIRED")


class TestExpiry:
    async def test_a_pending_command_reads_expired_before_any_sweep(
        self, client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
    ) -> None:
        agent = await enrolled_agent(client)
        command = await create_command(client, agent, expires_in=30)
        clock.advance(30)

        assert (await read_command(client, agent, command["id"]))["state"] == "EXPIRED"
        listed = (await client.get(agent.commands_url, headers=ADMIN)).json()["items"]
        assert listed[0]["state"] == "EXPIRED"
        assert (await stored_command(runtime, command["id"]))["state"] == "PENDING"

    async def test_a_pending_command_reads_pending_until_its_expiry(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        command = await create_command(client, agent, expires_in=30)
        clock.advance(29)

        assert (await read_command(client, agent, command["id"]))["state"] == "PENDING"

    async def test_an_expired_command_is_not_delivered_even_before_the_sweep(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        await create_command(client, agent, expires_in=30)
        clock.advance(31)

        assert await poll(client, agent) == []

    async def test_the_sweep_persists_the_expiry(
        self, client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
    ) -> None:
        agent = await enrolled_agent(client)
        command = await create_command(client, agent, expires_in=30)
        live = await create_command(client, agent, expires_in=60)
        clock.advance(31)

        assert await operations(client).sweep_commands() == 1

        assert (await stored_command(runtime, command["id"]))["state"] == "EXPIRED"
        assert (await stored_command(runtime, live["id"]))["state"] == "PENDING"
        assert [c["id"] for c in await poll(client, agent)] == [live["id"]]
        assert await operations(client).sweep_commands() == 0

    async def test_a_dispatched_command_expires_and_its_result_is_refused(
        self, client: httpx.AsyncClient, clock: FrozenClock, runtime: Runtime
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent, expires_in=30, lease_seconds=60)
        clock.advance(31)

        assert (await read_command(client, agent, command["id"]))["state"] == "EXPIRED"
        response = await report(client, agent, command["id"])

        assert response.status_code == 409, response.text
        assert problem_code(response) == "COMMAND_ALREADY_COMPLETED"
        assert (await stored_command(runtime, command["id"]))["output"] is None

    async def test_a_running_command_does_not_expire(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent, expires_in=30, lease_seconds=60)
        assert (await running(client, agent, command["id"])).status_code == 200
        clock.advance(31)

        assert await operations(client).sweep_commands() == 0

        assert (await read_command(client, agent, command["id"]))["state"] == "RUNNING"
        assert (await report(client, agent, command["id"])).status_code == 200

    async def test_an_expired_command_stays_expired_when_its_lease_lapses(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent, expires_in=30, lease_seconds=60)
        clock.advance(61)
        assert (await read_command(client, agent, command["id"]))["state"] == "EXPIRED"

        await poll(client, agent)

        assert (await read_command(client, agent, command["id"]))["state"] == "EXPIRED"
