"""The agent answering a command it holds: RUNNING, then SUCCEEDED or FAILED with output, error
and timings; every other move refused; each step in the audit log."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx

from tabard.core.clock import FrozenClock
from tabard.core.runtime import Runtime
from tests.conftest import ADMIN, bearer, create_org_key
from tests.operations.command_support import (
    audit_trail,
    create_command,
    dispatched,
    enrolled_agent,
    failed,
    operations,
    poll,
    problem_code,
    read_command,
    report,
    running,
    stored_command,
)

MAX_OUTPUT_BYTES = 256 * 1024


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


class TestRunning:
    async def test_a_dispatched_command_starts_running(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent)
        clock.advance(2)

        response = await running(client, agent, command["id"])

        assert response.status_code == 200, response.text
        assert response.json()["state"] == "RUNNING"
        assert at(response.json()["started_at"]) == clock.now()
        assert (await read_command(client, agent, command["id"]))["state"] == "RUNNING"

    async def test_a_pending_command_cannot_start(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        command = await create_command(client, agent)

        response = await running(client, agent, command["id"])

        assert response.status_code == 409, response.text
        assert problem_code(response) == "COMMAND_INVALID_TRANSITION"
        assert (await read_command(client, agent, command["id"]))["state"] == "PENDING"

    async def test_another_instance_cannot_start_it(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent, "i-1")

        response = await running(client, agent, command["id"], "i-2")

        assert response.status_code == 409, response.text
        assert problem_code(response) == "COMMAND_INVALID_TRANSITION"
        assert (await read_command(client, agent, command["id"]))["state"] == "DISPATCHED"


class TestResult:
    async def test_a_running_command_succeeds_with_its_output(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent)
        assert (await running(client, agent, command["id"])).status_code == 200
        started = clock.now()
        clock.advance(3)

        response = await report(client, agent, command["id"], output={"rows": 42})

        assert response.status_code == 200, response.text
        done = await read_command(client, agent, command["id"])
        assert (done["state"], done["output"], done["error"]) == ("SUCCEEDED", {"rows": 42}, None)
        assert (at(done["started_at"]), at(done["finished_at"])) == (started, clock.now())
        assert done["leased_to"] is None

    async def test_a_dispatched_command_fails_with_its_error_and_timings(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent)
        started, finished = clock.now() + timedelta(seconds=1), clock.now() + timedelta(seconds=4)

        response = await report(
            client,
            agent,
            command["id"],
            status="FAILED",
            output={"partial": True},
            error={"code": "DISK_FULL", "message": "no space left on /var"},
            started_at=started.isoformat(),
            finished_at=finished.isoformat(),
        )

        assert response.status_code == 200, response.text
        done = await read_command(client, agent, command["id"])
        assert done["state"] == "FAILED"
        assert done["error"] == {"code": "DISK_FULL", "message": "no space left on /var"}
        assert done["output"] == {"partial": True}
        assert (at(done["started_at"]), at(done["finished_at"])) == (started, finished)

    async def test_a_pending_command_cannot_have_a_result(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        command = await create_command(client, agent)

        response = await report(client, agent, command["id"])

        assert response.status_code == 409, response.text
        assert problem_code(response) == "COMMAND_INVALID_TRANSITION"
        assert (await read_command(client, agent, command["id"]))["state"] == "PENDING"

    async def test_a_second_result_is_refused_and_changes_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent)
        assert (await report(client, agent, command["id"], output="first")).status_code == 200

        response = await report(client, agent, command["id"], status="FAILED", output="second")

        assert response.status_code == 409, response.text
        assert problem_code(response) == "COMMAND_ALREADY_COMPLETED"
        done = await read_command(client, agent, command["id"])
        assert (done["state"], done["output"]) == ("SUCCEEDED", "first")

    async def test_another_instance_than_the_lease_holder_is_refused(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent, "i-1")

        response = await report(client, agent, command["id"], "i-2")

        assert response.status_code == 409, response.text
        assert problem_code(response) == "COMMAND_INVALID_TRANSITION"
        assert (await report(client, agent, command["id"], "i-1")).status_code == 200

    async def test_an_output_of_256_kb_is_accepted(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent)
        output = "a" * (MAX_OUTPUT_BYTES - 2)  # its JSON adds the two quotes

        response = await report(client, agent, command["id"], output=output)

        assert response.status_code == 200, response.text
        assert (await stored_command(runtime, command["id"]))["output"] == output

    async def test_an_output_over_256_kb_is_refused(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent)

        response = await report(client, agent, command["id"], output="a" * (MAX_OUTPUT_BYTES - 1))

        assert response.status_code == 422, response.text
        assert [error["field"] for error in response.json()["errors"]] == ["body.output"]
        assert (await stored_command(runtime, command["id"]))["state"] == "DISPATCHED"

    async def test_an_org_key_cannot_answer(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent)
        key = await create_org_key(client, "acme")

        response = await client.post(
            f"/v1/agent/commands/{command['id']}/result",
            json={"instance_id": "i-1", "status": "SUCCEEDED"},
            headers=bearer(key),
        )

        assert response.status_code == 403, response.text
        assert (await read_command(client, agent, command["id"]))["state"] == "DISPATCHED"


class TestAnotherAgentsCommand:
    async def test_it_cannot_be_started(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        other = await enrolled_agent(client, name="other-bot", create_org_too=False)
        command = await dispatched(client, agent)

        response = await running(client, other, command["id"])

        assert response.status_code == 404, response.text
        assert problem_code(response) == "COMMAND_NOT_FOUND"

    async def test_it_cannot_be_answered(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        other = await enrolled_agent(client, name="other-bot", create_org_too=False)
        command = await dispatched(client, agent)

        response = await report(client, other, command["id"], output="hijacked")

        assert response.status_code == 404, response.text
        assert problem_code(response) == "COMMAND_NOT_FOUND"
        assert (await read_command(client, agent, command["id"]))["output"] is None

    async def test_another_orgs_agent_cannot_answer_either(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        other = await enrolled_agent(client, "globex", "other-bot")
        command = await dispatched(client, agent)

        response = await report(client, other, command["id"])

        assert response.status_code == 404, response.text
        assert (await read_command(client, agent, command["id"]))["state"] == "DISPATCHED"


class TestAuditTrail:
    async def test_a_success_is_created_running_succeeded(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent)
        await running(client, agent, command["id"])
        await report(client, agent, command["id"])

        events = await audit_trail(client, "acme", command["id"])

        assert [e["action"] for e in events] == [
            "command.created",
            "command.running",
            "command.succeeded",
        ]
        assert [e["details"]["state"] for e in events] == ["PENDING", "RUNNING", "SUCCEEDED"]
        assert {e["details"]["agent_id"] for e in events} == {agent.id}

    async def test_a_failure_is_recorded_with_its_code(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        command = await failed(client, agent)

        events = await audit_trail(client, "acme", command["id"])

        assert [e["action"] for e in events] == ["command.created", "command.failed"]
        assert events[-1]["details"]["error_code"] == "DISK_FULL"

    async def test_a_cancellation_is_recorded(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        command = await create_command(client, agent)
        await client.post(agent.command_url(command["id"]) + "/cancel", headers=ADMIN)

        events = await audit_trail(client, "acme", command["id"])

        assert [e["action"] for e in events] == ["command.created", "command.cancelled"]

    async def test_an_expiry_is_recorded_by_the_sweep(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        command = await create_command(client, agent, expires_in=30)
        clock.advance(31)
        await operations(client).sweep_commands()

        events = await audit_trail(client, "acme", command["id"])

        assert [e["action"] for e in events] == ["command.created", "command.expired"]
        assert events[-1]["actor_kind"] == "system"

    async def test_a_lapsed_lease_is_recorded_as_a_failure(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        command = await dispatched(client, agent, lease_seconds=5)
        clock.advance(6)
        await poll(client, agent)

        events = await audit_trail(client, "acme", command["id"])

        assert [e["action"] for e in events] == ["command.created", "command.failed"]
        assert events[-1]["details"]["error_code"] == "LEASE_EXPIRED"

    async def test_a_retry_is_recorded_with_its_origin(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        original = await failed(client, agent)
        retried = await client.post(agent.command_url(original["id"]) + "/retry", headers=ADMIN)

        events = await audit_trail(client, "acme", retried.json()["id"])

        assert [e["action"] for e in events] == ["command.created"]
        assert events[0]["details"]["retry_of"] == original["id"]
