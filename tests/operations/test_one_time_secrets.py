"""Secrets in a result (`{"__tabard_secret__": value}`) are never stored: the row, the audit log,
the outbox and the logs hold "[REDACTED]"; the clear value goes to the operator's first read of
the command, within 5 minutes, once, whichever replica serves it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import text

from tabard.api.app import build_runtime, create_app
from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tabard.core.runtime import Runtime
from tests.conftest import ADMIN
from tests.operations.command_support import (
    Agent,
    dispatched,
    enrolled_agent,
    read_command,
    report,
    stored_command,
)

SECRET = "s3cr3t-db-password-7f2a"  # distinctive, so a search for it finds no false match
OUTPUT = {
    "user": "backup",
    "password": {"__tabard_secret__": SECRET},
    "keys": [{"__tabard_secret__": "key-one-93c1"}, "public"],
}
CLEAR = {"user": "backup", "password": SECRET, "keys": ["key-one-93c1", "public"]}
REDACTED = {"user": "backup", "password": "[REDACTED]", "keys": ["[REDACTED]", "public"]}


async def answered(client: httpx.AsyncClient, agent: Agent, output: Any = OUTPUT) -> str:
    """The id of a command whose SUCCEEDED result carried `output`."""
    command = await dispatched(client, agent)
    response = await report(client, agent, command["id"], output=output)
    assert response.status_code == 200, response.text
    command_id: str = command["id"]
    return command_id


async def stored_text(runtime: Runtime) -> str:
    """Everything the database holds of commands, audit events and outbox events, as text."""
    queries = [
        "SELECT CAST(output AS TEXT) FROM commands",
        "SELECT CAST(details AS TEXT) FROM audit_events",
        "SELECT CAST(data AS TEXT) FROM outbox_events",
    ]
    async with runtime.database.read_only() as session:
        rows = [row for query in queries for row in (await session.execute(text(query))).all()]
    return "\n".join(str(row[0]) for row in rows)


class TestStoring:
    async def test_the_row_holds_redacted_values(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        agent = await enrolled_agent(client)

        command_id = await answered(client, agent)

        assert (await stored_command(runtime, command_id))["output"] == REDACTED

    async def test_the_result_response_shows_no_clear_value(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent)

        response = await report(client, agent, command["id"], output=OUTPUT)

        assert response.json()["output"] == REDACTED
        assert SECRET not in response.text

    async def test_no_table_holds_the_clear_value(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        agent = await enrolled_agent(client)

        await answered(client, agent)

        stored = await stored_text(runtime)
        assert "[REDACTED]" in stored
        assert SECRET not in stored
        assert "key-one-93c1" not in stored

    async def test_the_audit_log_shows_no_clear_value(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)

        command_id = await answered(client, agent)

        response = await client.get("/v1/audit", params={"org": "acme"}, headers=ADMIN)
        assert response.status_code == 200, response.text
        assert command_id in response.text
        assert SECRET not in response.text
        exported = await client.get("/v1/audit/export", params={"org": "acme"}, headers=ADMIN)
        assert command_id in exported.text
        assert SECRET not in exported.text

    async def test_the_logs_show_no_clear_value(
        self, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
    ) -> None:
        agent = await enrolled_agent(client)

        command_id = await answered(client, agent)
        await read_command(client, agent, command_id)

        logged = capsys.readouterr()
        assert "/result" in logged.out + logged.err  # the request was logged
        assert SECRET not in logged.out + logged.err


class TestRevealingOnce:
    async def test_the_first_read_shows_the_clear_value_and_the_second_does_not(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        command_id = await answered(client, agent)

        first = await read_command(client, agent, command_id)
        second = await read_command(client, agent, command_id)

        assert first["output"] == CLEAR
        assert second["output"] == REDACTED

    async def test_the_list_never_shows_it_nor_uses_up_the_first_read(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        command_id = await answered(client, agent)

        listed = await client.get(agent.commands_url, headers=ADMIN)

        assert listed.status_code == 200, listed.text
        assert listed.json()["items"][0]["output"] == REDACTED
        assert SECRET not in listed.text
        assert (await read_command(client, agent, command_id))["output"] == CLEAR

    async def test_the_clear_value_lasts_5_minutes(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        command_id = await answered(client, agent)
        clock.advance(299)

        assert (await read_command(client, agent, command_id))["output"] == CLEAR

    async def test_after_5_minutes_the_first_read_shows_redacted(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        command_id = await answered(client, agent)
        clock.advance(301)

        assert (await read_command(client, agent, command_id))["output"] == REDACTED

    async def test_concurrent_first_reads_reveal_it_once(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        command_id = await answered(client, agent)

        reads = await asyncio.gather(*(read_command(client, agent, command_id) for _ in range(5)))

        outputs = [read["output"] for read in reads]
        assert outputs.count(CLEAR) == 1
        assert outputs.count(REDACTED) == 4

    async def test_an_output_without_secrets_reads_the_same_every_time(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        command_id = await answered(client, agent, {"rows": 3, "note": "__tabard_secret__"})

        first = await read_command(client, agent, command_id)
        second = await read_command(client, agent, command_id)

        assert first["output"] == second["output"] == {"rows": 3, "note": "__tabard_secret__"}

    async def test_a_marker_beside_other_keys_is_no_secret(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        agent = await enrolled_agent(client)
        output = {"wrapped": {"__tabard_secret__": "visible", "other": 1}}

        command_id = await answered(client, agent, output)

        assert (await stored_command(runtime, command_id))["output"] == output


@pytest.fixture
async def other_replica(settings: Settings, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    """A second app on the same database and Redis, with its own connections to both."""
    runtime = build_runtime(settings, clock=clock)
    app = create_app(settings, runtime=runtime)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://replica.test") as http:
        yield http
    await runtime.kv.close()
    await runtime.bus.close()
    await runtime.database.close()


@pytest.mark.redis
class TestAcrossReplicasOnRedis:
    @pytest.fixture
    def overrides(self, redis_url: str) -> dict[str, Any]:
        """Redis as the kv store, on the emptied database of TABARD_TEST_REDIS_URL."""
        with redis.Redis.from_url(redis_url) as connection:
            connection.flushdb()
        return {"kv_backend": "redis", "redis_url": redis_url}

    async def test_concurrent_reads_through_both_replicas_reveal_it_once(
        self, client: httpx.AsyncClient, other_replica: httpx.AsyncClient, settings: Settings
    ) -> None:
        assert settings.kv_backend == "redis"
        agent = await enrolled_agent(client)
        command_id = await answered(client, agent)

        reads = await asyncio.gather(
            *(read_command(http, agent, command_id) for http in [client, other_replica] * 3)
        )

        outputs = [read["output"] for read in reads]
        assert outputs.count(CLEAR) == 1
        assert outputs.count(REDACTED) == 5

    async def test_the_other_replica_reveals_a_result_stored_through_this_one(
        self, client: httpx.AsyncClient, other_replica: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        command_id = await answered(client, agent)

        assert (await read_command(other_replica, agent, command_id))["output"] == CLEAR
        assert (await read_command(client, agent, command_id))["output"] == REDACTED
