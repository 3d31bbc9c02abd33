"""Bindings through the HTTP API: an org approves one of its agents for a capability scope.

`pending → approved → revoked → approved …`; one binding per agent; the scope stays within the
agent's capabilities (checked again at approval); every change is audited.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, bearer, create_agent, create_org, create_org_key
from tests.trust.support import (
    CAPABILITIES,
    approved_binding,
    audit_events,
    binding_url,
    bindings_url,
    create_binding,
    list_bindings,
    move_binding,
)


class TestCreateBinding:
    async def test_a_new_binding_is_pending_with_its_scope(
        self, client: httpx.AsyncClient, agent: dict[str, Any]
    ) -> None:
        key = await create_org_key(client, "acme")
        body = {"agent_id": agent["id"], "scope": ["invoices.read"], "note": "monthly close"}

        response = await client.post(bindings_url(), json=body, headers=bearer(key))

        assert response.status_code == 201, response.text
        binding = response.json()
        assert binding["status"] == "pending"
        assert binding["org_id"] == "acme"
        assert binding["agent_id"] == agent["id"]
        assert binding["scope"] == ["invoices.read"]
        assert binding["note"] == "monthly close"
        assert binding["approved_at"] is None
        assert binding["revoked_at"] is None

    async def test_repeated_scope_items_are_stored_once(
        self, client: httpx.AsyncClient, agent: dict[str, Any]
    ) -> None:
        scope = ["invoices.read", "payments.read", "invoices.read"]
        binding = await create_binding(client, agent["id"], scope)
        assert binding["scope"] == ["invoices.read", "payments.read"]

    async def test_scope_beyond_the_capabilities_is_400_and_creates_nothing(
        self, client: httpx.AsyncClient, agent: dict[str, Any]
    ) -> None:
        body = {"agent_id": agent["id"], "scope": ["invoices.read", "payroll.write"]}

        response = await client.post(bindings_url(), json=body, headers=ADMIN)

        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "BINDING_SCOPE_EXCEEDS_CAPABILITIES"
        assert "payroll.write" in response.json()["detail"]
        assert (await list_bindings(client))["items"] == []
        assert await audit_events(client, "binding.created") == []

    async def test_a_second_binding_for_the_same_agent_is_409(
        self, client: httpx.AsyncClient, agent: dict[str, Any]
    ) -> None:
        first = await create_binding(client, agent["id"], ["invoices.read"])
        body = {"agent_id": agent["id"], "scope": ["payments.read"]}

        response = await client.post(bindings_url(), json=body, headers=ADMIN)

        assert response.status_code == 409, response.text
        assert response.json()["code"] == "BINDING_ALREADY_EXISTS"
        assert [item["id"] for item in (await list_bindings(client))["items"]] == [first["id"]]

    async def test_unknown_agent_is_404(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        body = {"agent_id": "no-such-agent", "scope": ["invoices.read"]}

        response = await client.post(bindings_url(), json=body, headers=ADMIN)

        assert response.status_code == 404, response.text
        assert response.json()["code"] == "AGENT_NOT_FOUND"

    async def test_empty_scope_is_422(
        self, client: httpx.AsyncClient, agent: dict[str, Any]
    ) -> None:
        body = {"agent_id": agent["id"], "scope": []}

        response = await client.post(bindings_url(), json=body, headers=ADMIN)

        assert response.status_code == 422, response.text
        assert response.json()["detail"].startswith("body.scope")
        assert (await list_bindings(client))["items"] == []


class TestGetBinding:
    async def test_returns_the_binding(
        self, client: httpx.AsyncClient, agent: dict[str, Any]
    ) -> None:
        created = await create_binding(client, agent["id"], ["invoices.read"])

        response = await client.get(binding_url(created["id"]), headers=ADMIN)

        assert response.status_code == 200, response.text
        assert response.json() == created

    async def test_unknown_binding_is_404(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        response = await client.get(binding_url("no-such-binding"), headers=ADMIN)
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "BINDING_NOT_FOUND"


class TestListBindings:
    @pytest.fixture
    async def three(self, client: httpx.AsyncClient) -> list[dict[str, Any]]:
        """Three agents' bindings: pending, approved, revoked (in that order of creation)."""
        await create_org(client, "acme")
        made = []
        for name, moves in (("a-bot", []), ("b-bot", ["approve"]), ("c-bot", ["revoke"])):
            agent = await create_agent(client, "acme", name, capabilities=CAPABILITIES)
            binding = await create_binding(client, agent["id"], ["invoices.read"])
            for move in moves:
                assert (await move_binding(client, binding["id"], move)).status_code == 200
            made.append(binding)
        return made

    async def test_filters_by_status(
        self, client: httpx.AsyncClient, three: list[dict[str, Any]]
    ) -> None:
        for status, expected in (("pending", 0), ("approved", 1), ("revoked", 2)):
            page = await list_bindings(client, "acme", status=status)
            assert [item["id"] for item in page["items"]] == [three[expected]["id"]], status

    async def test_filters_by_agent(
        self, client: httpx.AsyncClient, three: list[dict[str, Any]]
    ) -> None:
        page = await list_bindings(client, "acme", agent_id=three[1]["agent_id"])
        assert [item["id"] for item in page["items"]] == [three[1]["id"]]

    async def test_unknown_status_is_422(
        self, client: httpx.AsyncClient, three: list[dict[str, Any]]
    ) -> None:
        response = await client.get(bindings_url(), params={"status": "maybe"}, headers=ADMIN)
        assert response.status_code == 422, response.text

    async def test_cursor_pagination_walks_every_binding_once(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        created = []
        for index in range(5):
            agent = await create_agent(client, "acme", f"bot-{index}", capabilities=CAPABILITIES)
            created.append((await create_binding(client, agent["id"], ["invoices.read"]))["id"])
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await list_bindings(
                client, "acme", limit=2, **({"cursor": cursor} if cursor else {})
            )
            assert len(page["items"]) <= 2
            seen += [item["id"] for item in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(created)
        assert pages == 3


class TestApproveBinding:
    async def test_pending_becomes_approved(
        self, client: httpx.AsyncClient, agent: dict[str, Any]
    ) -> None:
        binding = await create_binding(client, agent["id"], ["invoices.read"])

        response = await move_binding(client, binding["id"], "approve")

        assert response.status_code == 200, response.text
        assert response.json()["status"] == "approved"
        assert response.json()["approved_at"] is not None

    async def test_a_revoked_binding_may_be_approved_again(
        self, client: httpx.AsyncClient, agent: dict[str, Any]
    ) -> None:
        binding = await approved_binding(client, agent["id"], ["invoices.read"])
        assert (await move_binding(client, binding["id"], "revoke")).status_code == 200

        response = await move_binding(client, binding["id"], "approve")

        assert response.status_code == 200, response.text
        assert response.json()["status"] == "approved"
        assert response.json()["revoked_at"] is None  # the row says what holds now

    async def test_approving_an_approved_binding_is_409(
        self, client: httpx.AsyncClient, agent: dict[str, Any]
    ) -> None:
        binding = await approved_binding(client, agent["id"], ["invoices.read"])

        response = await move_binding(client, binding["id"], "approve")

        assert response.status_code == 409, response.text
        assert response.json()["code"] == "BINDING_STATE_CONFLICT"

    async def test_scope_is_checked_again_when_the_capabilities_shrank(
        self, client: httpx.AsyncClient, agent: dict[str, Any]
    ) -> None:
        binding = await create_binding(client, agent["id"], ["invoices.read", "payments.read"])
        shrink = await client.patch(
            f"/v1/orgs/acme/agents/{agent['id']}",
            json={"capabilities": ["invoices.read"]},
            headers=ADMIN,
        )
        assert shrink.status_code == 200, shrink.text

        response = await move_binding(client, binding["id"], "approve")

        assert response.status_code == 400, response.text
        assert response.json()["code"] == "BINDING_SCOPE_EXCEEDS_CAPABILITIES"
        assert "payments.read" in response.json()["detail"]
        read = await client.get(binding_url(binding["id"]), headers=ADMIN)
        assert read.json()["status"] == "pending"

    async def test_unknown_binding_is_404(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        response = await move_binding(client, "no-such-binding", "approve")
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "BINDING_NOT_FOUND"


class TestRevokeBinding:
    async def test_approved_becomes_revoked(
        self, client: httpx.AsyncClient, agent: dict[str, Any]
    ) -> None:
        binding = await approved_binding(client, agent["id"], ["invoices.read"])

        response = await move_binding(client, binding["id"], "revoke")

        assert response.status_code == 200, response.text
        assert response.json()["status"] == "revoked"
        assert response.json()["revoked_at"] is not None

    async def test_revoking_twice_is_409(
        self, client: httpx.AsyncClient, agent: dict[str, Any]
    ) -> None:
        binding = await approved_binding(client, agent["id"], ["invoices.read"])
        assert (await move_binding(client, binding["id"], "revoke")).status_code == 200

        response = await move_binding(client, binding["id"], "revoke")

        assert response.status_code == 409, response.text
        assert response.json()["code"] == "BINDING_STATE_CONFLICT"


class TestUpdateBinding:
    @pytest.mark.parametrize("moves", [[], ["approve", "revoke"]], ids=["pending", "revoked"])
    async def test_scope_changes_while_pending_or_revoked(
        self, client: httpx.AsyncClient, agent: dict[str, Any], moves: list[str]
    ) -> None:
        binding = await create_binding(client, agent["id"], ["invoices.read"])
        for move in moves:
            assert (await move_binding(client, binding["id"], move)).status_code == 200

        response = await client.patch(
            binding_url(binding["id"]), json={"scope": ["payments.read"]}, headers=ADMIN
        )

        assert response.status_code == 200, response.text
        assert response.json()["scope"] == ["payments.read"]
        read = await client.get(binding_url(binding["id"]), headers=ADMIN)
        assert read.json()["scope"] == ["payments.read"]

    async def test_an_approved_bindings_scope_cannot_change(
        self, client: httpx.AsyncClient, agent: dict[str, Any]
    ) -> None:
        binding = await approved_binding(client, agent["id"], ["invoices.read"])

        response = await client.patch(
            binding_url(binding["id"]), json={"scope": ["payments.read"]}, headers=ADMIN
        )

        assert response.status_code == 409, response.text
        assert response.json()["code"] == "BINDING_STATE_CONFLICT"
        read = await client.get(binding_url(binding["id"]), headers=ADMIN)
        assert read.json()["scope"] == ["invoices.read"]

    async def test_an_approved_bindings_note_may_change(
        self, client: httpx.AsyncClient, agent: dict[str, Any]
    ) -> None:
        binding = await approved_binding(client, agent["id"], ["invoices.read"])

        response = await client.patch(
            binding_url(binding["id"]), json={"note": "reviewed"}, headers=ADMIN
        )

        assert response.status_code == 200, response.text
        assert response.json()["note"] == "reviewed"
        assert response.json()["status"] == "approved"

    async def test_scope_beyond_the_capabilities_is_400_and_changes_nothing(
        self, client: httpx.AsyncClient, agent: dict[str, Any]
    ) -> None:
        binding = await create_binding(client, agent["id"], ["invoices.read"])

        response = await client.patch(
            binding_url(binding["id"]), json={"scope": ["payroll.write"]}, headers=ADMIN
        )

        assert response.status_code == 400, response.text
        assert response.json()["code"] == "BINDING_SCOPE_EXCEEDS_CAPABILITIES"
        read = await client.get(binding_url(binding["id"]), headers=ADMIN)
        assert read.json()["scope"] == ["invoices.read"]

    async def test_empty_scope_is_422(
        self, client: httpx.AsyncClient, agent: dict[str, Any]
    ) -> None:
        binding = await create_binding(client, agent["id"], ["invoices.read"])
        response = await client.patch(binding_url(binding["id"]), json={"scope": []}, headers=ADMIN)
        assert response.status_code == 422, response.text


class TestBindingAudit:
    async def test_create_approve_revoke_are_audited_with_the_binding(
        self, client: httpx.AsyncClient, agent: dict[str, Any]
    ) -> None:
        binding = await create_binding(client, agent["id"], ["invoices.read"])
        assert (await move_binding(client, binding["id"], "approve")).status_code == 200
        assert (await move_binding(client, binding["id"], "revoke")).status_code == 200

        for action, status in (
            ("binding.created", "pending"),
            ("binding.approved", "approved"),
            ("binding.revoked", "revoked"),
        ):
            events = await audit_events(client, action)
            assert len(events) == 1, action
            assert events[0]["target"] == binding["id"]
            assert events[0]["outcome"] == "success"
            assert events[0]["details"] == {
                "binding_id": binding["id"],
                "agent_id": agent["id"],
                "status": status,
                "scope": ["invoices.read"],
            }

    async def test_a_refused_change_is_not_audited(
        self, client: httpx.AsyncClient, agent: dict[str, Any]
    ) -> None:
        binding = await approved_binding(client, agent["id"], ["invoices.read"])
        assert (await move_binding(client, binding["id"], "approve")).status_code == 409
        assert len(await audit_events(client, "binding.approved")) == 1
