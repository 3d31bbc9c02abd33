"""Agents over HTTP: registration, validation, names, listing, updates, lifecycle and limits."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tabard.core.clock import FrozenClock
from tabard.core.outbox import OutboxEvent
from tabard.core.runtime import Runtime
from tests.conftest import ADMIN, bearer, create_agent, create_org, create_org_key

FREE_TIER_LIMIT = 10
METADATA_LIMIT = 16 * 1024
# '{"blob":"' + value + '"}' is the compact JSON the limit is measured on: 11 bytes of framing.
LARGEST_BLOB = METADATA_LIMIT - len('{"blob":""}')


def agent_url(agent: dict[str, Any]) -> str:
    return f"/v1/orgs/{agent['org_id']}/agents/{agent['id']}"


async def agent_ids(client: httpx.AsyncClient, org_id: str = "acme", **params: Any) -> list[str]:
    response = await client.get(f"/v1/orgs/{org_id}/agents", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    return [agent["id"] for agent in response.json()["items"]]


async def agent_names(client: httpx.AsyncClient, org_id: str = "acme", **params: Any) -> list[str]:
    response = await client.get(f"/v1/orgs/{org_id}/agents", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    return sorted(agent["name"] for agent in response.json()["items"])


async def move(client: httpx.AsyncClient, agent: dict[str, Any], action: str) -> httpx.Response:
    return await client.post(f"{agent_url(agent)}/{action}", headers=ADMIN)


async def status_of(client: httpx.AsyncClient, agent: dict[str, Any]) -> str:
    response = await client.get(agent_url(agent), headers=ADMIN)
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


def error_fields(response: httpx.Response) -> list[str]:
    return [error["field"] for error in response.json()["errors"]]


def assert_state_conflict(response: httpx.Response) -> None:
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "AGENT_STATE_CONFLICT"


INVALID_FIELDS = [
    pytest.param({"version": "1.0"}, "body.version", id="version-without-patch"),
    pytest.param({"version": "v1.2.3"}, "body.version", id="version-with-v-prefix"),
    pytest.param(
        {"metadata": {"blob": "x" * (LARGEST_BLOB + 1)}}, "body.metadata", id="metadata-over-16kb"
    ),
    pytest.param({"capabilities": ["Invoices Read"]}, "body.capabilities.0", id="capability-caps"),
    pytest.param({"capabilities": ["a..b"]}, "body.capabilities.0", id="capability-empty-segment"),
    pytest.param({"capabilities": ["crm", ""]}, "body.capabilities.1", id="capability-empty"),
    pytest.param(
        {"capabilities": [f"cap-{i}" for i in range(65)]},
        "body.capabilities",
        id="more-than-64-capabilities",
    ),
    pytest.param({"endpoint_url": "ftp://x"}, "body.endpoint_url", id="endpoint-ftp"),
    pytest.param({"endpoint_url": "not a url"}, "body.endpoint_url", id="endpoint-not-url"),
    pytest.param(
        {"endpoint_url": "javascript:alert(1)"}, "body.endpoint_url", id="endpoint-javascript"
    ),
    pytest.param({"environment": "moon"}, "body.environment", id="unknown-environment"),
    pytest.param({"visibility": "secret"}, "body.visibility", id="unknown-visibility"),
]


class TestCreateAgent:
    async def test_agent_gets_a_uuid7_id_a_did_and_defaults(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        response = await client.post(
            "/v1/orgs/acme/agents", json={"name": "invoice-bot"}, headers=ADMIN
        )
        assert response.status_code == 201, response.text
        agent = response.json()
        assert uuid.UUID(agent["id"]).version == 7
        assert agent["did"] == f"did:web:127.0.0.1%3A8080:agents:{agent['id']}"
        assert agent["org_id"] == "acme"
        assert agent["status"] == "active"
        assert agent["visibility"] == "private"
        assert agent["environment"] == "development"
        assert agent["display_name"] == "invoice-bot"
        assert agent["capabilities"] == []
        assert agent["tags"] == []
        assert agent["metadata"] == {}
        assert agent["endpoint_url"] is None
        assert agent["created_at"] == agent["updated_at"]

    async def test_location_names_the_new_agent(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        response = await client.post(
            "/v1/orgs/acme/agents", json={"name": "invoice-bot"}, headers=ADMIN
        )
        location = response.headers["location"]
        assert location == f"/v1/orgs/acme/agents/{response.json()['id']}"
        fetched = await client.get(location, headers=ADMIN)
        assert fetched.status_code == 200
        assert fetched.json() == response.json()

    async def test_every_given_field_is_stored(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        key = await create_org_key(client, "acme")
        fields: dict[str, Any] = {
            "display_name": "Invoice Bot",
            "description": "Reads invoices",
            "type": "worker",
            "version": "1.4.0-rc.1+build.7",
            "capabilities": ["invoices:read", "crm.contacts:write"],
            "tags": ["finance", "EU"],
            "environment": "production",
            "endpoint_url": "https://agents.acme.example/a2a",
            "visibility": "public",
            "metadata": {"team": "ap", "cost_center": 42},
        }
        agent = await create_agent(client, headers=bearer(key), **fields)
        fetched = (await client.get(agent_url(agent), headers=bearer(key))).json()
        for field, value in fields.items():
            assert fetched[field] == value, field

    async def test_repeated_capabilities_are_stored_once(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, capabilities=["crm", "invoices:read", "crm"])
        assert agent["capabilities"] == ["crm", "invoices:read"]

    async def test_metadata_of_exactly_16_kb_is_accepted(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, metadata={"blob": "x" * LARGEST_BLOB})
        assert len(agent["metadata"]["blob"]) == LARGEST_BLOB

    @pytest.mark.parametrize(("fields", "field"), INVALID_FIELDS)
    async def test_invalid_field_is_422_naming_it_and_creates_nothing(
        self, client: httpx.AsyncClient, fields: dict[str, Any], field: str
    ) -> None:
        await create_org(client, "acme")
        response = await client.post(
            "/v1/orgs/acme/agents", json={"name": "invoice-bot", **fields}, headers=ADMIN
        )
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "VALIDATION_FAILED"
        assert field in error_fields(response)
        assert await agent_ids(client) == []

    @pytest.mark.parametrize("name", ["Bad_Name", "-x", "x-", "", "a" * 64])
    async def test_invalid_name_is_422_and_creates_nothing(
        self, client: httpx.AsyncClient, name: str
    ) -> None:
        await create_org(client, "acme")
        response = await client.post("/v1/orgs/acme/agents", json={"name": name}, headers=ADMIN)
        assert response.status_code == 422, response.text
        assert error_fields(response)[0] == "body.name"
        assert await agent_ids(client) == []

    async def test_missing_name_is_422(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        response = await client.post("/v1/orgs/acme/agents", json={}, headers=ADMIN)
        assert response.status_code == 422
        assert error_fields(response) == ["body.name"]

    async def test_unknown_field_is_422_and_creates_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        response = await client.post(
            "/v1/orgs/acme/agents", json={"name": "invoice-bot", "colour": "red"}, headers=ADMIN
        )
        assert response.status_code == 422
        assert error_fields(response) == ["body.colour"]
        assert await agent_ids(client) == []

    async def test_taken_name_is_409_and_creates_nothing(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        first = await create_agent(client, name="invoice-bot")
        response = await client.post(
            "/v1/orgs/acme/agents", json={"name": "invoice-bot"}, headers=ADMIN
        )
        assert response.status_code == 409
        assert response.json()["code"] == "AGENT_ALREADY_EXISTS"
        assert await agent_ids(client) == [first["id"]]

    async def test_same_name_in_another_org_is_fine(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        acme = await create_agent(client, "acme", "invoice-bot")
        globex = await create_agent(client, "globex", "invoice-bot")
        assert acme["id"] != globex["id"]
        assert acme["did"] != globex["did"]

    async def test_name_of_a_decommissioned_agent_stays_reserved(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, name="invoice-bot")
        assert (await move(client, agent, "decommission")).status_code == 200
        response = await client.post(
            "/v1/orgs/acme/agents", json={"name": "invoice-bot"}, headers=ADMIN
        )
        assert response.status_code == 409
        assert response.json()["code"] == "AGENT_ALREADY_EXISTS"

    async def test_unknown_org_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/orgs/nowhere/agents", json={"name": "invoice-bot"}, headers=ADMIN
        )
        assert response.status_code == 404

    async def test_suspended_org_cannot_register_agents(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        suspended = await client.post("/v1/orgs/acme/suspend", headers=ADMIN)
        assert suspended.status_code == 200, suspended.text
        response = await client.post(
            "/v1/orgs/acme/agents", json={"name": "invoice-bot"}, headers=ADMIN
        )
        assert response.status_code == 403
        assert response.json()["code"] == "ORG_SUSPENDED"
        assert await agent_ids(client) == []


class TestTierAgentLimit:
    async def test_free_tier_refuses_the_eleventh_agent(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        for i in range(FREE_TIER_LIMIT):
            await create_agent(client, name=f"agent-{i}")
        response = await client.post(
            "/v1/orgs/acme/agents", json={"name": "one-too-many"}, headers=ADMIN
        )
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "TIER_AGENT_LIMIT_EXCEEDED"
        assert len(await agent_ids(client)) == FREE_TIER_LIMIT
        assert "one-too-many" not in await agent_names(client)

    async def test_decommissioning_an_agent_frees_a_slot(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agents = [await create_agent(client, name=f"agent-{i}") for i in range(FREE_TIER_LIMIT)]
        assert (await move(client, agents[0], "decommission")).status_code == 200
        await create_agent(client, name="replacement")
        refused = await client.post("/v1/orgs/acme/agents", json={"name": "more"}, headers=ADMIN)
        assert refused.status_code == 403
        assert refused.json()["code"] == "TIER_AGENT_LIMIT_EXCEEDED"

    async def test_suspended_agents_still_count(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agents = [await create_agent(client, name=f"agent-{i}") for i in range(FREE_TIER_LIMIT)]
        for agent in agents[:3]:
            assert (await move(client, agent, "suspend")).status_code == 200
        response = await client.post("/v1/orgs/acme/agents", json={"name": "more"}, headers=ADMIN)
        assert response.status_code == 403
        assert response.json()["code"] == "TIER_AGENT_LIMIT_EXCEEDED"

    async def test_enterprise_tier_is_not_limited(self, client: httpx.AsyncClient) -> None:
        created = await client.post(
            "/v1/orgs",
            json={"id": "bigcorp", "display_name": "Bigcorp", "tier": "enterprise"},
            headers=ADMIN,
        )
        assert created.status_code == 201, created.text
        for i in range(FREE_TIER_LIMIT + 2):
            await create_agent(client, "bigcorp", f"agent-{i}")
        assert len(await agent_ids(client, "bigcorp")) == FREE_TIER_LIMIT + 2

    async def test_the_limit_is_per_org(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        for i in range(FREE_TIER_LIMIT):
            await create_agent(client, "acme", f"agent-{i}")
        await create_agent(client, "globex", "agent-0")


class TestGetAgent:
    async def test_org_key_reads_its_agent(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        key = await create_org_key(client, "acme")
        agent = await create_agent(client, headers=bearer(key))
        response = await client.get(agent_url(agent), headers=bearer(key))
        assert response.status_code == 200
        assert response.json() == agent

    async def test_unknown_agent_is_404(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        response = await client.get(f"/v1/orgs/acme/agents/{uuid.uuid4()}", headers=ADMIN)
        assert response.status_code == 404
        assert response.json()["code"] == "AGENT_NOT_FOUND"

    async def test_decommissioned_agent_is_still_readable(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        await move(client, agent, "decommission")
        assert await status_of(client, agent) == "decommissioned"


class TestListAgents:
    async def test_filters_combine(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_agent(
            client,
            name="reader",
            type="worker",
            capabilities=["invoices:read"],
            tags=["finance"],
            environment="production",
        )
        await create_agent(
            client,
            name="writer",
            type="worker",
            capabilities=["invoices:read", "invoices:write"],
            tags=["finance", "eu"],
        )
        router = await create_agent(client, name="router", type="router", tags=["eu"])
        await move(client, router, "suspend")

        assert await agent_names(client) == ["reader", "router", "writer"]
        assert await agent_names(client, status="suspended") == ["router"]
        assert await agent_names(client, status="active") == ["reader", "writer"]
        assert await agent_names(client, type="worker") == ["reader", "writer"]
        assert await agent_names(client, tag="eu") == ["router", "writer"]
        assert await agent_names(client, environment="production") == ["reader"]
        assert await agent_names(client, environment="development") == ["router", "writer"]
        assert await agent_names(client, tag="eu", type="worker") == ["writer"]

    async def test_capability_filters_must_all_match(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_agent(client, name="reader", capabilities=["invoices:read"])
        await create_agent(client, name="writer", capabilities=["invoices:read", "invoices:write"])
        await create_agent(client, name="payer", capabilities=["payments:send"])
        read = await agent_names(client, capability="invoices:read")
        assert read == ["reader", "writer"]
        both = await agent_names(client, capability=["invoices:read", "invoices:write"])
        assert both == ["writer"]
        none = await agent_names(client, capability=["invoices:read", "payments:send"])
        assert none == []

    async def test_only_the_orgs_own_agents_are_listed(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        await create_agent(client, "acme", "acme-bot")
        await create_agent(client, "globex", "globex-bot", visibility="public")
        assert await agent_names(client, "acme") == ["acme-bot"]

    async def test_cursor_walks_every_agent_once_in_id_order(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        created = [(await create_agent(client, name=f"agent-{i}"))["id"] for i in range(5)]
        seen: list[str] = []
        pages = 0
        params: dict[str, Any] = {"limit": 2}
        while True:
            response = await client.get("/v1/orgs/acme/agents", params=params, headers=ADMIN)
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["items"]) <= 2
            seen += [agent["id"] for agent in page["items"]]
            pages += 1
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        assert pages == 3
        assert seen == sorted(created)
        assert len(set(seen)) == 5

    async def test_garbled_cursor_is_400(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        response = await client.get(
            "/v1/orgs/acme/agents", params={"cursor": "not-a-cursor"}, headers=ADMIN
        )
        assert response.status_code == 400
        assert response.json()["code"] == "INVALID_CURSOR"

    async def test_unknown_filter_value_is_422(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        response = await client.get(
            "/v1/orgs/acme/agents", params={"status": "asleep"}, headers=ADMIN
        )
        assert response.status_code == 422
        assert error_fields(response) == ["query.status"]


class TestUpdateAgent:
    async def test_sent_fields_change_and_updated_at_moves(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, description="old", tags=["finance"])
        clock.advance(60)
        changes = {
            "display_name": "Invoice Bot",
            "version": "2.0.0",
            "environment": "staging",
            "visibility": "public",
            "metadata": {"team": "ap"},
        }
        response = await client.patch(agent_url(agent), json=changes, headers=ADMIN)
        assert response.status_code == 200, response.text
        updated = response.json()
        for field, value in changes.items():
            assert updated[field] == value, field
        assert updated["description"] == "old"  # fields not sent stay as they were
        assert updated["tags"] == ["finance"]
        assert updated["name"] == agent["name"]
        assert updated["created_at"] == agent["created_at"]
        created_at = datetime.fromisoformat(agent["created_at"])
        assert datetime.fromisoformat(updated["updated_at"]) == created_at + timedelta(seconds=60)
        assert (await client.get(agent_url(agent), headers=ADMIN)).json() == updated

    async def test_empty_patch_changes_nothing(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        clock.advance(60)
        response = await client.patch(agent_url(agent), json={}, headers=ADMIN)
        assert response.status_code == 200
        assert response.json() == agent

    @pytest.mark.parametrize(("fields", "field"), INVALID_FIELDS)
    async def test_invalid_field_is_422_naming_it_and_changes_nothing(
        self, client: httpx.AsyncClient, fields: dict[str, Any], field: str
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        response = await client.patch(agent_url(agent), json=fields, headers=ADMIN)
        assert response.status_code == 422, response.text
        assert field in error_fields(response)
        assert (await client.get(agent_url(agent), headers=ADMIN)).json() == agent

    async def test_name_cannot_be_changed(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        response = await client.patch(agent_url(agent), json={"name": "renamed"}, headers=ADMIN)
        assert response.status_code == 422
        assert error_fields(response) == ["body.name"]
        assert (await client.get(agent_url(agent), headers=ADMIN)).json()["name"] == "invoice-bot"

    async def test_null_display_name_is_422_and_keeps_the_name(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, display_name="Invoice Bot")
        response = await client.patch(agent_url(agent), json={"display_name": None}, headers=ADMIN)
        assert response.status_code == 422, response.text
        assert error_fields(response) == ["body.display_name"]
        stored = (await client.get(agent_url(agent), headers=ADMIN)).json()
        assert stored["display_name"] == "Invoice Bot"

    @pytest.mark.parametrize(
        "field",
        [
            "description",
            "type",
            "version",
            "capabilities",
            "tags",
            "environment",
            "visibility",
            "metadata",
        ],
    )
    async def test_null_for_a_required_field_is_422(
        self, client: httpx.AsyncClient, field: str
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        response = await client.patch(agent_url(agent), json={field: None}, headers=ADMIN)
        assert response.status_code == 422, response.text
        assert error_fields(response) == [f"body.{field}"]

    async def test_endpoint_url_is_changed(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        endpoint = "https://agents.acme.example/a2a"
        response = await client.patch(
            agent_url(agent), json={"endpoint_url": endpoint}, headers=ADMIN
        )
        assert response.status_code == 200, response.text
        assert response.json()["endpoint_url"] == endpoint
        assert (await client.get(agent_url(agent), headers=ADMIN)).json()[
            "endpoint_url"
        ] == endpoint

    async def test_null_endpoint_url_clears_it(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, endpoint_url="https://agents.acme.example/a2a")
        response = await client.patch(agent_url(agent), json={"endpoint_url": None}, headers=ADMIN)
        assert response.status_code == 200, response.text
        assert response.json()["endpoint_url"] is None

    async def test_new_capabilities_and_tags_are_what_filters_find(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(
            client, capabilities=["invoices:read", "invoices:write"], tags=["finance", "eu"]
        )
        response = await client.patch(
            agent_url(agent),
            json={"capabilities": ["invoices:write", "payments:send"], "tags": ["eu", "beta"]},
            headers=ADMIN,
        )
        assert response.status_code == 200, response.text
        assert await agent_ids(client, capability="payments:send") == [agent["id"]]
        assert await agent_ids(client, capability="invoices:write") == [agent["id"]]
        assert await agent_ids(client, capability="invoices:read") == []
        assert await agent_ids(client, tag="beta") == [agent["id"]]
        assert await agent_ids(client, tag="eu") == [agent["id"]]
        assert await agent_ids(client, tag="finance") == []

    async def test_decommissioned_agent_cannot_change(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        decommissioned = (await move(client, agent, "decommission")).json()
        response = await client.patch(
            agent_url(agent), json={"display_name": "Back"}, headers=ADMIN
        )
        assert_state_conflict(response)
        assert (await client.get(agent_url(agent), headers=ADMIN)).json() == decommissioned


class TestSuspendAgent:
    async def test_active_agent_is_suspended(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        clock.advance(5)
        response = await move(client, agent, "suspend")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "suspended"
        assert response.json()["updated_at"] != agent["updated_at"]
        assert await status_of(client, agent) == "suspended"

    async def test_suspending_a_suspended_agent_is_409(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        await move(client, agent, "suspend")
        assert_state_conflict(await move(client, agent, "suspend"))
        assert await status_of(client, agent) == "suspended"

    async def test_suspending_a_decommissioned_agent_is_409(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        await move(client, agent, "decommission")
        assert_state_conflict(await move(client, agent, "suspend"))
        assert await status_of(client, agent) == "decommissioned"


class TestReactivateAgent:
    async def test_suspended_agent_is_active_again(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        await move(client, agent, "suspend")
        response = await move(client, agent, "reactivate")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "active"
        assert await status_of(client, agent) == "active"

    async def test_reactivating_an_active_agent_is_409(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        assert_state_conflict(await move(client, agent, "reactivate"))
        assert await status_of(client, agent) == "active"

    async def test_reactivating_a_decommissioned_agent_is_409(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        await move(client, agent, "decommission")
        assert_state_conflict(await move(client, agent, "reactivate"))
        assert await status_of(client, agent) == "decommissioned"


class TestDecommissionAgent:
    async def test_active_agent_is_decommissioned(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        response = await move(client, agent, "decommission")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "decommissioned"
        assert await status_of(client, agent) == "decommissioned"

    async def test_suspended_agent_is_decommissioned(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        await move(client, agent, "suspend")
        response = await move(client, agent, "decommission")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "decommissioned"

    async def test_decommissioning_twice_is_409(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        await move(client, agent, "decommission")
        assert_state_conflict(await move(client, agent, "decommission"))

    async def test_unknown_agent_is_404(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        response = await client.post(
            f"/v1/orgs/acme/agents/{uuid.uuid4()}/decommission", headers=ADMIN
        )
        assert response.status_code == 404
        assert response.json()["code"] == "AGENT_NOT_FOUND"


class TestDeleteOrgWithAgents:
    async def test_org_with_an_active_agent_is_not_deleted(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_agent(client)
        response = await client.delete("/v1/orgs/acme", headers=ADMIN)
        assert response.status_code == 409
        assert response.json()["code"] == "ORG_HAS_ACTIVE_AGENTS"
        assert (await client.get("/v1/orgs/acme", headers=ADMIN)).status_code == 200

    async def test_a_suspended_agent_also_blocks_deletion(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        kept = await create_agent(client, name="kept")
        retired = await create_agent(client, name="retired")
        await move(client, kept, "suspend")
        await move(client, retired, "decommission")
        response = await client.delete("/v1/orgs/acme", headers=ADMIN)
        assert response.status_code == 409
        assert response.json()["code"] == "ORG_HAS_ACTIVE_AGENTS"

    async def test_org_whose_agents_are_all_decommissioned_is_deleted(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        for name in ("first", "second"):
            agent = await create_agent(client, name=name)
            await move(client, agent, "decommission")
        response = await client.delete("/v1/orgs/acme", headers=ADMIN)
        assert response.status_code == 204, response.text
        assert (await client.get("/v1/orgs/acme", headers=ADMIN)).status_code == 404


class TestAgentEvents:
    async def test_each_change_is_audited_and_announced(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        await client.patch(agent_url(agent), json={"description": "Reads"}, headers=ADMIN)
        for action in ("suspend", "reactivate", "decommission"):
            assert (await move(client, agent, action)).status_code == 200
        expected = [
            "agent.created",
            "agent.updated",
            "agent.suspended",
            "agent.reactivated",
            "agent.decommissioned",
        ]

        audit = await client.get("/v1/audit", params={"org": "acme", "limit": 200}, headers=ADMIN)
        events = [
            event
            for event in audit.json()["items"]
            if event["target"] == agent["id"] and event["action"].startswith("agent.")
        ]
        assert [event["action"] for event in reversed(events)] == expected
        assert all(event["outcome"] == "success" for event in events)
        updated = next(event for event in events if event["action"] == "agent.updated")
        assert updated["details"]["fields"] == ["description"]

        async with runtime.database.read_only() as session:
            statement = (
                select(OutboxEvent.type, OutboxEvent.org_id)
                .where(OutboxEvent.subject == agent["id"], OutboxEvent.type.startswith("agent."))
                .order_by(OutboxEvent.sequence)
            )
            rows = (await session.execute(statement)).all()
        assert [row.type for row in rows] == expected
        assert {row.org_id for row in rows} == {"acme"}

    async def test_refused_changes_leave_no_events(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        await client.post("/v1/orgs/acme/agents", json={"name": "invoice-bot"}, headers=ADMIN)
        await move(client, agent, "reactivate")
        await client.patch(agent_url(agent), json={"version": "1.0"}, headers=ADMIN)
        async with runtime.database.read_only() as session:
            statement = select(OutboxEvent.type).where(OutboxEvent.type.like("agent.%"))
            types = list((await session.execute(statement)).scalars())
        assert types == ["agent.created"]


def registered_total(metrics_text: str, environment: str) -> float | None:
    prefix = f'tabard_agents_registered_total{{environment="{environment}"}} '
    for line in metrics_text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None


class TestRegisteredMetric:
    async def test_registering_a_production_agent_counts_it(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        # The metrics registry is process-wide: other tests may have counted agents already.
        before = registered_total((await client.get("/metrics")).text, "production") or 0.0
        await create_agent(client, environment="production")
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert registered_total(response.text, "production") == before + 1

    async def test_a_refused_registration_is_not_counted(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_agent(client, environment="production")
        before = registered_total((await client.get("/metrics")).text, "production")
        await client.post(
            "/v1/orgs/acme/agents",
            json={"name": "invoice-bot", "environment": "production"},
            headers=ADMIN,
        )
        assert registered_total((await client.get("/metrics")).text, "production") == before


class TestCrossTenantAgents:
    async def test_another_orgs_key_sees_404_and_changes_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        globex = bearer(await create_org_key(client, "globex"))
        agent = await create_agent(client, "acme", visibility="public")
        url = agent_url(agent)
        attempts = [
            await client.get(url, headers=globex),
            await client.patch(url, json={"display_name": "Owned"}, headers=globex),
            await client.post(f"{url}/suspend", headers=globex),
            await client.post(f"{url}/reactivate", headers=globex),
            await client.post(f"{url}/decommission", headers=globex),
            await client.get("/v1/orgs/acme/agents", headers=globex),
            await client.post("/v1/orgs/acme/agents", json={"name": "stolen"}, headers=globex),
        ]
        assert [response.status_code for response in attempts] == [404] * len(attempts)
        assert (await client.get(url, headers=ADMIN)).json() == agent
        assert await agent_ids(client, "acme") == [agent["id"]]

    async def test_another_orgs_agent_id_under_ones_own_org_is_404(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        globex = bearer(await create_org_key(client, "globex"))
        agent = await create_agent(client, "acme")
        url = f"/v1/orgs/globex/agents/{agent['id']}"
        attempts = [
            await client.get(url, headers=globex),
            await client.patch(url, json={"display_name": "Owned"}, headers=globex),
            await client.post(f"{url}/suspend", headers=globex),
            await client.post(f"{url}/decommission", headers=globex),
        ]
        for response in attempts:
            assert response.status_code == 404
            assert response.json()["code"] == "AGENT_NOT_FOUND"
        assert (await client.get(agent_url(agent), headers=ADMIN)).json() == agent
