"""Helpers of the heartbeat and agent-status tests: an agent with its access token, beats, and
what the database holds (raw SQL, past every API layer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import JSON, bindparam, text

from tabard.core.runtime import Runtime
from tabard.operations.service import Operations
from tests.conftest import ADMIN, bearer
from tests.tokens.support import access_token, agent_client

HEARTBEAT_URL = "/v1/agent/heartbeat"


@dataclass(frozen=True)
class Agent:
    """A registered agent of an org and an access token of its own."""

    org_id: str
    id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)

    @property
    def status_url(self) -> str:
        return f"/v1/orgs/{self.org_id}/agents/{self.id}/status"


async def enrolled_agent(
    client: httpx.AsyncClient, org_id: str = "acme", name: str = "invoice-bot"
) -> Agent:
    """Org `org_id` (created) with one agent holding a client secret, and its access token."""
    registered = await agent_client(client, org_id, name)
    return Agent(org_id, registered.agent["id"], await access_token(client, registered))


def operations_of(client: httpx.AsyncClient) -> Operations:
    """The app's own Operations: tests flush and announce instead of waiting for its jobs."""
    ops: Operations = client._transport.app.state.operations  # type: ignore[attr-defined]
    return ops


async def beat(
    client: httpx.AsyncClient, agent: Agent, instance_id: str = "i-1", **fields: Any
) -> dict[str, Any]:
    """One heartbeat that must be accepted; returns the acknowledgement."""
    response = await client.post(
        HEARTBEAT_URL, json={"instance_id": instance_id, **fields}, headers=agent.headers
    )
    assert response.status_code == 200, response.text
    ack: dict[str, Any] = response.json()
    return ack


async def stored_instances(runtime: Runtime) -> list[dict[str, Any]]:
    """The rows of agent_instances, by agent and instance id."""
    statement = text(
        "SELECT agent_id, instance_id, org_id, hostname, version, sdk_version, status_data, "
        "clock_skew_seconds, heartbeats FROM agent_instances ORDER BY agent_id, instance_id"
    ).columns(status_data=JSON)
    async with runtime.database.read_only() as session:
        return [dict(row) for row in (await session.execute(statement)).mappings()]


async def outbox_events(runtime: Runtime, *types: str) -> list[dict[str, Any]]:
    """The outbox events of these types, oldest first."""
    statement = (
        text(
            "SELECT type, org_id, subject, data FROM outbox_events "
            "WHERE type IN :types ORDER BY sequence"
        )
        .bindparams(bindparam("types", expanding=True))
        .columns(data=JSON)
    )
    async with runtime.database.read_only() as session:
        result = await session.execute(statement, {"types": list(types)})
        return [dict(row) for row in result.mappings()]


async def audit_events(
    client: httpx.AsyncClient, action: str, org_id: str = "acme"
) -> list[dict[str, Any]]:
    """The org's audit events of `action`, newest first (read as the platform admin)."""
    params: dict[str, str | int] = {"org": org_id, "action": action, "limit": 200}
    response = await client.get("/v1/audit", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["items"]
    return events


async def agent_status(
    client: httpx.AsyncClient, agent: Agent, headers: dict[str, str] = ADMIN
) -> dict[str, Any]:
    """GET the agent's status (200 asserted)."""
    response = await client.get(agent.status_url, headers=headers)
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    return status
