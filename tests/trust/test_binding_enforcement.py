"""Bindings at the token endpoint and on the API: what an agent may obtain, and how fast losing
its approval stops it.

Tokens are client-secret tokens of real agents; bindings and trust settings change through the
API. The revocation cut-off is rounded up to the next second, so a token meant to be issued after
a revocation is requested after advancing the clock 2 s.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis

from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tests.conftest import ADMIN, bearer, create_org_key
from tests.tokens.oauth_checks import assert_oauth_error, denial_reasons
from tests.tokens.support import (
    AgentClient,
    access_token,
    agent_client,
    request_token,
)
from tests.trust.support import approved_binding, create_binding, move_binding, require_bindings


@pytest.fixture
def kv_backend() -> str:
    return "memory"


@pytest.fixture
def settings(settings: Settings, kv_backend: str, request: pytest.FixtureRequest) -> Settings:
    """The shared settings; on Redis, the emptied database of TABARD_TEST_REDIS_URL."""
    if kv_backend == "memory":
        return settings
    url: str = request.getfixturevalue("redis_url")
    with redis.Redis.from_url(url) as connection:
        connection.flushdb()
    return settings.model_copy(update={"kv_backend": "redis", "redis_url": url})


@pytest.fixture
async def acme(client: httpx.AsyncClient) -> AgentClient:
    """An agent with capabilities invoices.read, invoices.write, payments.read."""
    return await agent_client(client, "acme", "invoice-bot")


def refused_with(response: httpx.Response, code: str) -> None:
    """401 invalid_client naming the binding reason in `code`."""
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert response.json()["code"] == code
    assert response.headers["www-authenticate"].startswith("Basic realm=")


async def me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/v1/me", headers=bearer(token))


def binding_revoked(response: httpx.Response) -> None:
    """403 problem+json `BINDING_REVOKED` (the token is valid, its agent lost its approval)."""
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "BINDING_REVOKED"


async def introspected_active(client: httpx.AsyncClient, token: str) -> bool:
    key = await create_org_key(client, "acme")
    response = await client.post("/oauth2/introspect", data={"token": token}, headers=bearer(key))
    assert response.status_code == 200, response.text
    active: bool = response.json()["active"]
    return active


async def granted_scope(client: httpx.AsyncClient, agent: AgentClient, **form: str) -> list[str]:
    response = await request_token(client, agent, None, **form)
    assert response.status_code == 200, response.text
    scope: list[str] = response.json()["scope"].split()
    return scope


async def scoped_client(
    client: httpx.AsyncClient, agent: AgentClient, scope: list[str]
) -> AgentClient:
    """A second client_secret credential of `agent` limited to `scope`."""
    url = f"/v1/orgs/acme/agents/{agent.agent['id']}/credentials"
    response = await client.post(url, json={"name": "narrow", "scope": scope}, headers=ADMIN)
    assert response.status_code == 201, response.text
    body = response.json()
    return AgentClient(agent.agent, body["client_id"], body["client_secret"], body["id"])


class TestBindingRequired:
    async def test_an_agent_without_a_binding_is_refused_and_the_denial_audited(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        await require_bindings(client)

        response = await request_token(client, acme)

        refused_with(response, "BINDING_REQUIRED")
        assert await denial_reasons(client, "acme") == ["BINDING_REQUIRED"]

    async def test_a_pending_binding_is_still_refused(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        await require_bindings(client)
        await create_binding(client, acme.agent["id"], ["invoices.read"])

        refused_with(await request_token(client, acme), "BINDING_REQUIRED")

    async def test_an_approved_binding_grants_its_scope(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        await require_bindings(client)
        await approved_binding(client, acme.agent["id"], ["invoices.read", "invoices.write"])

        assert await granted_scope(client, acme) == ["invoices.read", "invoices.write"]

    async def test_a_requested_capability_outside_the_binding_is_narrowed_away(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        await require_bindings(client)
        await approved_binding(client, acme.agent["id"], ["invoices.read"])

        scope = await granted_scope(client, acme, scope="invoices.read payments.read")

        assert scope == ["invoices.read"]

    async def test_a_scope_outside_every_capability_is_invalid_scope(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        await require_bindings(client)
        await approved_binding(client, acme.agent["id"], ["invoices.read"])

        response = await request_token(client, acme, scope="invoices.read payroll.write")

        assert_oauth_error(response, 400, "invalid_scope")

    async def test_a_request_wholly_outside_the_binding_is_invalid_scope(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        await require_bindings(client)
        await approved_binding(client, acme.agent["id"], ["invoices.read"])

        response = await request_token(client, acme, scope="payments.read")

        assert_oauth_error(response, 400, "invalid_scope")


class TestCredentialScope:
    async def test_the_credential_scope_narrows_the_binding_scope_further(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        await require_bindings(client)
        await approved_binding(client, acme.agent["id"], ["invoices.read", "invoices.write"])
        narrow = await scoped_client(client, acme, ["invoices.read", "payments.read"])

        assert await granted_scope(client, narrow) == ["invoices.read"]

    async def test_a_credential_scope_beyond_the_capabilities_is_422(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        url = f"/v1/orgs/acme/agents/{acme.agent['id']}/credentials"
        body = {"name": "wide", "scope": ["invoices.read", "payroll.write"]}

        response = await client.post(url, json=body, headers=ADMIN)

        assert response.status_code == 422, response.text
        assert response.json()["detail"].startswith("body.scope")

    async def test_an_empty_intersection_of_credential_and_binding_is_invalid_scope(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        await require_bindings(client)
        await approved_binding(client, acme.agent["id"], ["invoices.read"])
        narrow = await scoped_client(client, acme, ["payments.read"])

        assert_oauth_error(await request_token(client, narrow), 400, "invalid_scope")


class TestRevokingTheBinding:
    @pytest.fixture
    async def binding(
        self, client: httpx.AsyncClient, acme: AgentClient, clock: FrozenClock
    ) -> dict[str, Any]:
        await require_bindings(client)  # ends the (unbound) agent's tokens issued so far
        binding = await approved_binding(client, acme.agent["id"], ["invoices.read"])
        clock.advance(2)
        return binding

    async def test_the_live_token_is_refused_at_once_with_binding_revoked(
        self, client: httpx.AsyncClient, acme: AgentClient, binding: dict[str, Any]
    ) -> None:
        token = await access_token(client, acme)
        assert (await me(client, token)).status_code == 200
        assert await introspected_active(client, token) is True

        assert (await move_binding(client, binding["id"], "revoke")).status_code == 200

        binding_revoked(await me(client, token))
        assert await introspected_active(client, token) is False

    async def test_new_token_requests_are_refused_with_binding_revoked(
        self, client: httpx.AsyncClient, acme: AgentClient, binding: dict[str, Any]
    ) -> None:
        assert (await move_binding(client, binding["id"], "revoke")).status_code == 200

        refused_with(await request_token(client, acme), "BINDING_REVOKED")
        assert await denial_reasons(client, "acme") == ["BINDING_REVOKED"]

    async def test_approving_again_lets_new_tokens_work_but_not_the_old_ones(
        self,
        client: httpx.AsyncClient,
        acme: AgentClient,
        binding: dict[str, Any],
        clock: FrozenClock,
    ) -> None:
        old = await access_token(client, acme)
        assert (await move_binding(client, binding["id"], "revoke")).status_code == 200
        clock.advance(2)

        assert (await move_binding(client, binding["id"], "approve")).status_code == 200

        new = await access_token(client, acme)
        assert (await me(client, new)).status_code == 200
        binding_revoked(await me(client, old))

    async def test_a_cached_client_is_refused_right_after_the_revocation(
        self, client: httpx.AsyncClient, acme: AgentClient, binding: dict[str, Any]
    ) -> None:
        first = await access_token(client, acme)
        assert (await me(client, first)).status_code == 200  # the revocation list is in sync
        assert (await request_token(client, acme)).status_code == 200  # served from the cache

        assert (await move_binding(client, binding["id"], "revoke")).status_code == 200

        refused_with(await request_token(client, acme), "BINDING_REVOKED")


class TestTurningTheRequirementOn:
    async def test_an_unbound_agents_live_token_is_refused_at_once(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)
        assert (await me(client, token)).status_code == 200

        await require_bindings(client)

        binding_revoked(await me(client, token))
        assert await introspected_active(client, token) is False

    async def test_an_agent_with_an_approved_binding_keeps_its_token(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        await approved_binding(client, acme.agent["id"], ["invoices.read"])
        token = await access_token(client, acme)

        await require_bindings(client)

        assert (await me(client, token)).status_code == 200

    async def test_a_cached_unbound_client_is_refused_at_once(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)
        assert (await me(client, token)).status_code == 200
        assert (await request_token(client, acme)).status_code == 200  # served from the cache

        await require_bindings(client)

        refused_with(await request_token(client, acme), "BINDING_REQUIRED")


class TestBindingNotRequired:
    async def test_without_a_binding_tokens_are_unrestricted(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        scope = await granted_scope(client, acme)
        assert scope == ["invoices.read", "invoices.write", "payments.read"]

    async def test_a_pending_binding_does_not_limit_yet(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        await create_binding(client, acme.agent["id"], ["invoices.read"])
        scope = await granted_scope(client, acme)
        assert scope == ["invoices.read", "invoices.write", "payments.read"]

    async def test_an_approved_binding_narrows_the_scope(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        await approved_binding(client, acme.agent["id"], ["payments.read"])
        assert await granted_scope(client, acme) == ["payments.read"]

    async def test_a_revoked_binding_is_refused(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        binding = await approved_binding(client, acme.agent["id"], ["payments.read"])
        token = await access_token(client, acme)

        assert (await move_binding(client, binding["id"], "revoke")).status_code == 200

        refused_with(await request_token(client, acme), "BINDING_REVOKED")
        binding_revoked(await me(client, token))

    async def test_other_agents_of_the_org_are_unaffected_by_a_revocation(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        other = await agent_client(client, "acme", "payroll-bot", create_org_too=False)
        binding = await approved_binding(client, acme.agent["id"], ["payments.read"])
        token = await access_token(client, other)

        assert (await move_binding(client, binding["id"], "revoke")).status_code == 200

        assert (await me(client, token)).status_code == 200
        assert (await request_token(client, other)).status_code == 200


class TestTrustSettings:
    async def test_binding_is_not_required_by_default(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        response = await client.get("/v1/orgs/acme/trust-settings", headers=ADMIN)
        assert response.status_code == 200, response.text
        assert response.json() == {"binding_required": False}

    async def test_the_org_key_turns_the_requirement_on_and_off(
        self, client: httpx.AsyncClient, acme: AgentClient, clock: FrozenClock
    ) -> None:
        key = bearer(await create_org_key(client, "acme"))
        url = "/v1/orgs/acme/trust-settings"
        on = await client.patch(url, json={"binding_required": True}, headers=key)
        assert on.status_code == 200, on.text
        assert (await client.get(url, headers=key)).json() == {"binding_required": True}
        refused_with(await request_token(client, acme), "BINDING_REQUIRED")

        off = await client.patch(url, json={"binding_required": False}, headers=key)
        assert off.status_code == 200, off.text
        clock.advance(2)

        token = await access_token(client, acme)
        assert (await me(client, token)).status_code == 200

    async def test_unknown_org_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/orgs/ghost/trust-settings", headers=ADMIN)
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "ORG_NOT_FOUND"

    async def test_another_orgs_key_gets_404(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        await agent_client(client, "initech", "bot")
        intruder = bearer(await create_org_key(client, "initech"))
        url = "/v1/orgs/acme/trust-settings"

        patched = await client.patch(url, json={"binding_required": True}, headers=intruder)

        assert patched.status_code == 404, patched.text
        assert (await client.get(url, headers=intruder)).status_code == 404
        assert (await client.get(url, headers=ADMIN)).json() == {"binding_required": False}


@pytest.mark.redis
@pytest.mark.parametrize("kv_backend", ["redis"])
class TestAcrossReplicasOnRedis:
    async def test_a_binding_revoked_on_one_replica_is_refused_on_the_other_at_once(
        self, client: httpx.AsyncClient, replica: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        binding = await approved_binding(client, acme.agent["id"], ["invoices.read"])
        token = await access_token(client, acme)
        assert (await me(replica, token)).status_code == 200  # the replica has read the list
        assert (await request_token(replica, acme)).status_code == 200  # and cached the client

        assert (await move_binding(client, binding["id"], "revoke")).status_code == 200

        binding_revoked(await me(replica, token))
        refused_with(await request_token(replica, acme), "BINDING_REVOKED")

    async def test_requiring_bindings_on_one_replica_refuses_unbound_tokens_on_the_other(
        self, client: httpx.AsyncClient, replica: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)
        assert (await me(replica, token)).status_code == 200

        await require_bindings(client)

        binding_revoked(await me(replica, token))
