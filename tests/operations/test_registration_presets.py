"""What a registration token's preset fixes: the agent's name (a pattern, or the name itself),
the most capabilities it may ask for, tags it gets in any case, or the existing agent it attaches
a new credential to. Asking for more than the preset allows is 422 and creates nothing."""

from __future__ import annotations

import re

import httpx
import pytest

from tabard.core.runtime import Runtime
from tests.conftest import ADMIN, create_agent, create_org
from tests.operations.registration_support import (
    AGENTS,
    acme_token,
    assert_invalid_field,
    create_token,
    principal,
    read_agent,
    register,
    registered,
    row_counts,
    token_status,
)


class TestNamePreset:
    async def test_a_name_matching_the_pattern_is_accepted(self, client: httpx.AsyncClient) -> None:
        token = await acme_token(client, name_pattern="worker-*")

        body = await registered(client, token, name="worker-eu-1")

        assert body["agent_name"] == "worker-eu-1"

    async def test_a_name_not_matching_the_pattern_is_422(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        token = await acme_token(client, name_pattern="worker-*")

        response = await register(client, token, name="crawler-1")

        assert_invalid_field(response, "body.name")
        assert await row_counts(runtime) == (0, 0, 0)
        assert await token_status(client, token) == "active"

    async def test_without_a_name_the_pattern_makes_one(self, client: httpx.AsyncClient) -> None:
        token = await acme_token(client, name_pattern="worker-*")

        body = await registered(client, token)

        assert re.fullmatch(r"worker-[0-9a-f]{8}", body["agent_name"]), body["agent_name"]
        assert (await read_agent(client, body["agent_id"]))["name"] == body["agent_name"]

    async def test_a_pattern_without_a_star_is_the_name(self, client: httpx.AsyncClient) -> None:
        token = await acme_token(client, name_pattern="backup-agent")

        body = await registered(client, token)

        assert body["agent_name"] == "backup-agent"

    @pytest.mark.parametrize("pattern", ["worker-", "-*", "a" * 60 + "*"])
    async def test_a_pattern_that_can_make_no_agent_name_is_refused_at_creation(
        self, client: httpx.AsyncClient, pattern: str
    ) -> None:
        await create_org(client, "acme")
        response = await client.post(
            "/v1/orgs/acme/registration-tokens",
            json={"preset": {"name_pattern": pattern}},
            headers=ADMIN,
        )

        assert_invalid_field(response, "body.preset.name_pattern")
        assert (await client.get("/v1/orgs/acme/registration-tokens", headers=ADMIN)).json() == []

    async def test_a_preset_agent_cannot_be_renamed_or_given_capabilities(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, "acme", "ledger", capabilities=["ledger.read"])
        token = await create_token(client, preset={"agent_id": agent["id"]})

        response = await register(client, token, name="other")

        assert_invalid_field(response, "body.name")
        assert await token_status(client, token) == "active"

    async def test_no_pattern_and_no_name_is_422(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        token = await acme_token(client)

        response = await register(client, token)

        assert_invalid_field(response, "body.name")
        assert await row_counts(runtime) == (0, 0, 0)


class TestCapabilityPreset:
    PRESET = ["db.backup", "db.restore"]

    async def test_a_requested_subset_is_honoured(self, client: httpx.AsyncClient) -> None:
        token = await acme_token(client, capabilities=self.PRESET)

        body = await registered(client, token, name="worker", capabilities=["db.backup"])

        assert (await read_agent(client, body["agent_id"]))["capabilities"] == ["db.backup"]

    async def test_requesting_beyond_the_preset_is_422(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        token = await acme_token(client, capabilities=self.PRESET)

        response = await register(client, token, name="worker", capabilities=["db.drop"])

        assert_invalid_field(response, "body.capabilities")
        assert "db.drop" in response.json()["errors"][0]["message"]
        assert await row_counts(runtime) == (0, 0, 0)

    async def test_without_a_request_the_agent_gets_the_preset(
        self, client: httpx.AsyncClient
    ) -> None:
        token = await acme_token(client, capabilities=self.PRESET)

        body = await registered(client, token, name="worker")

        assert (await read_agent(client, body["agent_id"]))["capabilities"] == self.PRESET


class TestTagPreset:
    async def test_preset_tags_are_added_to_the_requested_ones(
        self, client: httpx.AsyncClient
    ) -> None:
        token = await acme_token(client, tags=["fleet", "eu"])

        body = await registered(client, token, name="worker", tags=["gpu", "eu"])

        assert (await read_agent(client, body["agent_id"]))["tags"] == ["gpu", "eu", "fleet"]

    async def test_too_many_tags_in_all_is_422_and_creates_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        token = await acme_token(client, tags=[f"preset-{i}" for i in range(20)])

        response = await register(client, token, name="w", tags=[f"own-{i}" for i in range(20)])

        assert_invalid_field(response, "body.tags")
        assert await row_counts(runtime) == (0, 0, 0)
        assert await token_status(client, token) == "active"


class TestAgentPreset:
    async def test_the_token_attaches_a_new_credential_to_the_preset_agent(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, "acme", "invoice-bot")
        token = await create_token(client, preset={"agent_id": agent["id"]})

        body = await registered(client, token)

        assert (body["agent_id"], body["agent_name"]) == (agent["id"], "invoice-bot")
        assert await row_counts(runtime) == (1, 1, 0)
        listed = await client.get(f"{AGENTS}/{agent['id']}/credentials", headers=ADMIN)
        assert [c["client_id"] for c in listed.json()] == [body["client_id"]]
        who = await principal(client, body["client_id"], body["client_secret"])
        assert who["id"] == agent["id"]

    async def test_a_decommissioned_preset_agent_is_a_conflict(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, "acme", "invoice-bot")
        token = await create_token(client, preset={"agent_id": agent["id"]})
        retired = await client.post(f"{AGENTS}/{agent['id']}/decommission", headers=ADMIN)
        assert retired.status_code == 200, retired.text

        response = await register(client, token)

        assert response.status_code == 409, response.text
        assert response.json()["code"] == "AGENT_STATE_CONFLICT"
        assert await row_counts(runtime) == (1, 0, 0)
        assert await token_status(client, token) == "active"
