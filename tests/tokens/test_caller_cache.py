"""The token endpoint remembers recently authenticated secret clients for a few seconds, yet every
change that must stop a client (revoked credential, suspended agent or org, rotated secret)
still stops it at once, because each cached use re-reads those markers in the kv store."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from tabard.core.clock import FrozenClock
from tabard.core.runtime import Runtime
from tabard.tokens.caller_cache import TTL_SECONDS
from tests.conftest import ADMIN
from tests.tokens.oauth_checks import assert_invalid_client
from tests.tokens.support import AgentClient, access_token, agent_client, request_token


async def warm(client: httpx.AsyncClient, agent: AgentClient) -> None:
    """Issue a token and use it once (so the revocation list is in sync), then issue another
    (the client is now cached)."""
    token = await access_token(client, agent)
    assert (await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})).is_success
    assert (await request_token(client, agent)).status_code == 200


async def drop_capability(runtime: Runtime, agent: AgentClient) -> None:
    """Change the agent behind the API's back, to see whether the token endpoint reads it."""
    async with runtime.database.unit_of_work() as session:
        await session.execute(
            text("UPDATE agents SET capabilities = :caps WHERE id = :id"),
            {"caps": '["invoices.read"]', "id": agent.agent["id"]},
        )


class TestCallerCache:
    async def test_a_cached_client_is_served_without_reading_the_database(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        agent = await agent_client(client)
        await warm(client, agent)
        await drop_capability(runtime, agent)
        cached = await request_token(client, agent)
        assert "payments.read" in cached.json()["scope"].split()  # still the cached agent

    async def test_the_cache_expires_after_its_ttl(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        agent = await agent_client(client)
        await warm(client, agent)
        await drop_capability(runtime, agent)
        clock.advance(TTL_SECONDS + 1)
        fresh = await request_token(client, agent)
        assert fresh.json()["scope"] == "invoices.read"

    @pytest.mark.parametrize(
        "change",
        ["credentials/{credential}/revoke", "suspend", "decommission"],
    )
    async def test_a_change_to_the_client_or_agent_stops_it_at_once(
        self, client: httpx.AsyncClient, change: str
    ) -> None:
        agent = await agent_client(client)
        await warm(client, agent)
        base = f"/v1/orgs/acme/agents/{agent.agent['id']}"
        path = change.format(credential=agent.credential_id)
        assert (await client.post(f"{base}/{path}", headers=ADMIN)).is_success
        assert_invalid_client(await request_token(client, agent))

    async def test_suspending_the_org_stops_it_at_once(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        await warm(client, agent)
        assert (await client.post("/v1/orgs/acme/suspend", headers=ADMIN)).is_success
        assert_invalid_client(await request_token(client, agent))

    async def test_rotating_the_secret_stops_the_old_one_at_once(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await agent_client(client)
        await warm(client, agent)
        url = f"/v1/orgs/acme/agents/{agent.agent['id']}/credentials/{agent.credential_id}/rotate"
        rotated = await client.post(url, json={}, headers=ADMIN)
        assert rotated.is_success
        assert_invalid_client(await request_token(client, agent))
        renewed = AgentClient(
            agent.agent, agent.client_id, rotated.json()["client_secret"], agent.credential_id
        )
        assert (await request_token(client, renewed)).status_code == 200
