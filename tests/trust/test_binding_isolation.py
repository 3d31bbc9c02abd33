"""Bindings are each org's own: another org's key gets 404 on every binding route, and cannot
reach another org's binding or agent through its own org either."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, bearer, create_org, create_org_key
from tests.trust.support import binding_url, bindings_url, create_binding, list_bindings


class TestAcrossTenants:
    @pytest.fixture
    async def intruder(self, client: httpx.AsyncClient) -> dict[str, str]:
        await create_org(client, "initech")
        return bearer(await create_org_key(client, "initech"))

    @pytest.mark.parametrize(
        ("method", "path", "body"),
        [
            ("POST", "/v1/orgs/acme/bindings", {"agent_id": "{agent}", "scope": ["invoices.read"]}),
            ("GET", "/v1/orgs/acme/bindings", None),
            ("GET", "/v1/orgs/acme/bindings/{binding}", None),
            ("PATCH", "/v1/orgs/acme/bindings/{binding}", {"scope": ["payments.read"]}),
            ("POST", "/v1/orgs/acme/bindings/{binding}/approve", None),
            ("POST", "/v1/orgs/acme/bindings/{binding}/revoke", None),
        ],
    )
    async def test_another_orgs_key_gets_404_on_every_binding_route(
        self,
        client: httpx.AsyncClient,
        agent: dict[str, Any],
        intruder: dict[str, str],
        method: str,
        path: str,
        body: dict[str, Any] | None,
    ) -> None:
        binding = await create_binding(client, agent["id"], ["invoices.read"])
        url = path.format(binding=binding["id"])
        if body is not None and "agent_id" in body:
            body = {**body, "agent_id": agent["id"]}

        response = await client.request(method, url, json=body, headers=intruder)

        assert response.status_code == 404, response.text
        assert response.json()["code"] == "ORG_NOT_FOUND"
        read = await client.get(binding_url(binding["id"]), headers=ADMIN)
        assert read.json() == binding

    @pytest.mark.parametrize("action", ["", "/approve", "/revoke"])
    async def test_another_orgs_binding_id_under_its_own_org_is_404(
        self,
        client: httpx.AsyncClient,
        agent: dict[str, Any],
        intruder: dict[str, str],
        action: str,
    ) -> None:
        binding = await create_binding(client, agent["id"], ["invoices.read"])
        url = binding_url(binding["id"], "initech") + action

        response = await client.request("POST" if action else "GET", url, headers=intruder)

        assert response.status_code == 404, response.text
        assert response.json()["code"] == "BINDING_NOT_FOUND"
        assert (await client.get(binding_url(binding["id"]), headers=ADMIN)).json() == binding

    async def test_another_orgs_agent_cannot_be_bound_under_its_own_org(
        self, client: httpx.AsyncClient, agent: dict[str, Any], intruder: dict[str, str]
    ) -> None:
        body = {"agent_id": agent["id"], "scope": ["invoices.read"]}

        response = await client.post(bindings_url("initech"), json=body, headers=intruder)

        assert response.status_code == 404, response.text
        assert response.json()["code"] == "AGENT_NOT_FOUND"
        assert (await list_bindings(client))["items"] == []
