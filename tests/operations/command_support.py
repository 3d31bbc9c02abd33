"""Helpers of the command tests: an enrolled agent with its access token and declared actions,
and the calls of both sides of a command (the operator's and the agent's) through the API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import httpx
from sqlalchemy import text

from tabard.core.runtime import Runtime
from tabard.operations.service import Operations
from tests.conftest import ADMIN, bearer
from tests.tokens.support import access_token, agent_client

BACKUP_SCHEMA = {
    "type": "object",
    "properties": {"db": {"type": "string"}, "full": {"type": "boolean"}},
    "required": ["db"],
}
ACTIONS: list[dict[str, Any]] = [
    {"name": "backup", "description": "Back up a database", "params_schema": BACKUP_SCHEMA},
    {"name": "restart"},
    {"name": "migrate", "params_schema": BACKUP_SCHEMA, "requires_prepare": True},
]


@dataclass(frozen=True)
class Agent:
    """A registered agent with a valid access token (its own side of the API)."""

    id: str
    org_id: str
    headers: dict[str, str]

    @property
    def url(self) -> str:
        return f"/v1/orgs/{self.org_id}/agents/{self.id}"

    @property
    def commands_url(self) -> str:
        return f"{self.url}/commands"

    def command_url(self, command_id: str) -> str:
        return f"{self.commands_url}/{command_id}"


async def enrolled_agent(
    client: httpx.AsyncClient,
    org_id: str = "acme",
    name: str = "backup-bot",
    *,
    create_org_too: bool = True,
    actions: list[dict[str, Any]] | None = None,
) -> Agent:
    """An agent of `org_id` (created with its org unless told not to) that declared `actions`
    (default: `ACTIONS`)."""
    registered = await agent_client(client, org_id, name, create_org_too=create_org_too)
    token = await access_token(client, registered)
    agent = Agent(registered.agent["id"], org_id, bearer(token))
    response = await declare(client, agent, ACTIONS if actions is None else actions)
    assert response.status_code == 200, response.text
    return agent


async def declare(
    client: httpx.AsyncClient, agent: Agent, actions: list[dict[str, Any]]
) -> httpx.Response:
    return await client.put("/v1/agent/actions", json={"actions": actions}, headers=agent.headers)


async def create(
    client: httpx.AsyncClient, agent: Agent, headers: dict[str, str] = ADMIN, **body: Any
) -> httpx.Response:
    """POST a command (`action` defaults to "restart")."""
    return await client.post(
        agent.commands_url, json={"action": "restart", **body}, headers=headers
    )


async def create_command(client: httpx.AsyncClient, agent: Agent, **body: Any) -> dict[str, Any]:
    """One new command (201 asserted)."""
    response = await create(client, agent, **body)
    assert response.status_code == 201, response.text
    items: list[dict[str, Any]] = response.json()
    assert len(items) == 1, items
    return items[0]


async def read_command(
    client: httpx.AsyncClient, agent: Agent, command_id: str, headers: dict[str, str] = ADMIN
) -> dict[str, Any]:
    """The operator's read of a command (200 asserted)."""
    response = await client.get(agent.command_url(command_id), headers=headers)
    assert response.status_code == 200, response.text
    command: dict[str, Any] = response.json()
    return command


async def poll(
    client: httpx.AsyncClient,
    agent: Agent,
    instance_id: str = "i-1",
    wait: float = 0,
    limit: int = 10,
) -> list[dict[str, Any]]:
    """The commands leased to `instance_id` by one poll (200 asserted)."""
    params: dict[str, str | float] = {"instance_id": instance_id, "wait": wait, "limit": limit}
    response = await client.get("/v1/agent/commands", params=params, headers=agent.headers)
    assert response.status_code == 200, response.text
    commands: list[dict[str, Any]] = response.json()
    return commands


async def running(
    client: httpx.AsyncClient, agent: Agent, command_id: str, instance_id: str = "i-1"
) -> httpx.Response:
    url = f"/v1/agent/commands/{command_id}/running"
    return await client.post(url, json={"instance_id": instance_id}, headers=agent.headers)


async def report(
    client: httpx.AsyncClient,
    agent: Agent,
    command_id: str,
    instance_id: str = "i-1",
    status: str = "SUCCEEDED",
    **fields: Any,
) -> httpx.Response:
    """POST the result of a command."""
    body = {"instance_id": instance_id, "status": status, **fields}
    url = f"/v1/agent/commands/{command_id}/result"
    return await client.post(url, json=body, headers=agent.headers)


async def dispatched(
    client: httpx.AsyncClient, agent: Agent, instance: str = "i-1", **body: Any
) -> dict[str, Any]:
    """A new command, leased to `instance` by a poll."""
    command = await create_command(client, agent, **body)
    polled = await poll(client, agent, instance)
    assert [item["id"] for item in polled] == [command["id"]], polled
    return polled[0]


async def succeeded(
    client: httpx.AsyncClient, agent: Agent, instance: str = "i-1", **body: Any
) -> dict[str, Any]:
    """A command that ran and SUCCEEDED on `instance`."""
    command = await dispatched(client, agent, instance, **body)
    response = await report(client, agent, command["id"], instance)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def failed(
    client: httpx.AsyncClient, agent: Agent, instance: str = "i-1", **body: Any
) -> dict[str, Any]:
    """A command that ran and FAILED on `instance`."""
    command = await dispatched(client, agent, instance, **body)
    error = {"code": "DISK_FULL", "message": "no space left"}
    response = await report(client, agent, command["id"], instance, "FAILED", error=error)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def heartbeat(client: httpx.AsyncClient, agent: Agent, instance_id: str) -> None:
    body = {"instance_id": instance_id, "hostname": f"host-{instance_id}"}
    response = await client.post("/v1/agent/heartbeat", json=body, headers=agent.headers)
    assert response.status_code == 200, response.text


async def audit_trail(client: httpx.AsyncClient, org_id: str, target: str) -> list[dict[str, Any]]:
    """The audit events about `target` (a command id), oldest first."""
    params = {"org": org_id, "limit": "200"}
    response = await client.get("/v1/audit", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    events = [event for event in response.json()["items"] if event["target"] == target]
    return sorted(events, key=lambda event: event["sequence"])


def operations(client: httpx.AsyncClient) -> Operations:
    """The Operations of the app behind `client` (its sweep, its long-poll waiters)."""
    transport = cast("httpx.ASGITransport", client._transport)
    ops: Operations = cast("Any", transport.app).state.operations
    return ops


async def stored_command(runtime: Runtime, command_id: str) -> dict[str, Any]:
    """The command's row as the database holds it (raw SQL, past every API layer)."""
    async with runtime.database.read_only() as session:
        row = (
            await session.execute(
                text("SELECT state, output, error_code FROM commands WHERE id = :id"),
                {"id": command_id},
            )
        ).one()
    stored = dict(row._mapping)
    # SQLite hands a JSON column to raw SQL as its text; asyncpg decodes it already.
    if runtime.database.dialect == "sqlite" and stored["output"] is not None:
        stored["output"] = json.loads(stored["output"])
    return stored


def problem_code(response: httpx.Response) -> str:
    code: str = response.json()["code"]
    return code


def invalid_fields(response: httpx.Response) -> list[str]:
    """The fields a 422 names."""
    assert response.status_code == 422, response.text
    return [error["field"] for error in response.json()["errors"]]
