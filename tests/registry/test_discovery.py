"""Discovery: public, active agents of every org, plus all of the caller's own org's agents."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, bearer, create_agent, create_org, create_org_key

DISCOVERY = "/v1/discovery/agents"


async def retire(client: httpx.AsyncClient, agent: dict[str, Any], action: str) -> None:
    url = f"/v1/orgs/{agent['org_id']}/agents/{agent['id']}/{action}"
    response = await client.post(url, headers=ADMIN)
    assert response.status_code == 200, response.text


async def discover(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, **params: Any
) -> list[str]:
    """The names of every agent found (all pages), sorted."""
    response = await client.get(DISCOVERY, params={**params, "limit": 200}, headers=headers)
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_cursor"] is None
    return sorted(agent["name"] for agent in page["items"])


async def populate(client: httpx.AsyncClient) -> str:
    """Two orgs with public and private agents in every status; returns acme's org key."""
    await create_org(client, "acme")
    await create_org(client, "globex")
    await create_agent(
        client,
        "acme",
        "acme-public",
        display_name="Invoice Desk",
        type="worker",
        capabilities=["invoices:read", "invoices:write"],
        tags=["finance"],
        environment="production",
        visibility="public",
    )
    await create_agent(
        client,
        "acme",
        "acme-private",
        type="worker",
        capabilities=["invoices:read", "invoices:write"],
        tags=["finance"],
        environment="production",
    )
    suspended = await create_agent(
        client, "acme", "acme-suspended", capabilities=["invoices:read"], visibility="public"
    )
    await retire(client, suspended, "suspend")
    retired = await create_agent(
        client, "acme", "acme-retired", capabilities=["invoices:read"], visibility="public"
    )
    await retire(client, retired, "decommission")
    await create_agent(
        client,
        "globex",
        "globex-public",
        description="Sends payments and reads invoices",
        type="orchestrator",
        capabilities=["invoices:read", "payments:send"],
        tags=["payments"],
        environment="staging",
        visibility="public",
    )
    await create_agent(
        client,
        "globex",
        "globex-private",
        capabilities=["invoices:read", "invoices:write"],
        tags=["finance"],
    )
    g_suspended = await create_agent(client, "globex", "globex-suspended", visibility="public")
    await retire(client, g_suspended, "suspend")
    g_retired = await create_agent(client, "globex", "globex-retired", visibility="public")
    await retire(client, g_retired, "decommission")
    return await create_org_key(client, "acme")


class TestDiscoveryVisibility:
    async def test_anonymous_sees_only_public_active_agents_of_every_org(
        self, client: httpx.AsyncClient
    ) -> None:
        await populate(client)
        assert await discover(client) == ["acme-public", "globex-public"]

    async def test_org_key_adds_every_agent_of_its_own_org(self, client: httpx.AsyncClient) -> None:
        acme = bearer(await populate(client))
        assert await discover(client, acme) == [
            "acme-private",
            "acme-public",
            "acme-retired",
            "acme-suspended",
            "globex-public",
        ]

    async def test_org_key_never_sees_another_orgs_private_agents(
        self, client: httpx.AsyncClient
    ) -> None:
        acme = bearer(await populate(client))
        found = await discover(client, acme, org="globex")
        assert found == ["globex-public"]
        assert await discover(client, acme, capability="invoices:write") == [
            "acme-private",
            "acme-public",
        ]

    async def test_platform_admin_sees_every_agent(self, client: httpx.AsyncClient) -> None:
        await populate(client)
        assert len(await discover(client, ADMIN)) == 8

    async def test_wrong_bearer_token_is_401_not_anonymous(self, client: httpx.AsyncClient) -> None:
        await populate(client)
        for token in ("not-the-secret", "tbd_org_" + "x" * 43):
            response = await client.get(DISCOVERY, headers=bearer(token))
            assert response.status_code == 401, token
            assert "items" not in response.json()

    async def test_malformed_authorization_header_is_401(self, client: httpx.AsyncClient) -> None:
        await populate(client)
        response = await client.get(DISCOVERY, headers={"Authorization": "Basic abc"})
        assert response.status_code == 401

    async def test_a_suspended_agent_leaves_discovery_until_reactivated(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, "acme", "listed", visibility="public")
        await retire(client, agent, "suspend")
        assert await discover(client) == []
        await retire(client, agent, "reactivate")
        assert await discover(client) == ["listed"]

    async def test_making_an_agent_private_hides_it(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, "acme", "listed", visibility="public")
        response = await client.patch(
            f"/v1/orgs/acme/agents/{agent['id']}", json={"visibility": "private"}, headers=ADMIN
        )
        assert response.status_code == 200, response.text
        assert await discover(client) == []


class TestDiscoveryFilters:
    async def test_several_capabilities_must_all_match(self, client: httpx.AsyncClient) -> None:
        await populate(client)
        assert await discover(client, capability="invoices:read") == [
            "acme-public",
            "globex-public",
        ]
        both = await discover(client, capability=["invoices:read", "invoices:write"])
        assert both == ["acme-public"]
        other = await discover(client, capability=["invoices:read", "payments:send"])
        assert other == ["globex-public"]
        assert await discover(client, capability=["invoices:write", "payments:send"]) == []

    async def test_tag_type_environment_and_org(self, client: httpx.AsyncClient) -> None:
        await populate(client)
        assert await discover(client, tag="payments") == ["globex-public"]
        assert await discover(client, tag="finance") == ["acme-public"]
        assert await discover(client, type="orchestrator") == ["globex-public"]
        assert await discover(client, type="worker") == ["acme-public"]
        assert await discover(client, environment="staging") == ["globex-public"]
        assert await discover(client, environment="development") == []
        assert await discover(client, org="acme") == ["acme-public"]
        assert await discover(client, org="nowhere") == []
        assert await discover(client, tag="finance", environment="staging") == []

    async def test_status_filter_within_what_is_visible(self, client: httpx.AsyncClient) -> None:
        acme = bearer(await populate(client))
        assert await discover(client, status="suspended") == []
        assert await discover(client, acme, status="suspended") == ["acme-suspended"]
        assert await discover(client, acme, status="decommissioned") == ["acme-retired"]
        assert await discover(client, acme, status="active") == [
            "acme-private",
            "acme-public",
            "globex-public",
        ]

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            pytest.param({"environment": "moon"}, "query.environment", id="environment"),
            pytest.param({"status": "asleep"}, "query.status", id="status"),
            pytest.param({"limit": "0"}, "query.limit", id="limit-zero"),
            pytest.param({"limit": "201"}, "query.limit", id="limit-too-large"),
            pytest.param({"q": ""}, "query.q", id="empty-q"),
            pytest.param({"colour": "red"}, "query.colour", id="unknown-parameter"),
        ],
    )
    async def test_invalid_filter_is_422(
        self, client: httpx.AsyncClient, params: dict[str, str], field: str
    ) -> None:
        response = await client.get(DISCOVERY, params=params)
        assert response.status_code == 422, response.text
        assert [error["field"] for error in response.json()["errors"]] == [field]


class TestDiscoveryText:
    async def test_q_matches_name_display_name_and_description_ignoring_case(
        self, client: httpx.AsyncClient
    ) -> None:
        await populate(client)
        assert await discover(client, q="ACME-PUB") == ["acme-public"]  # name
        assert await discover(client, q="invoice desk") == ["acme-public"]  # display name
        assert await discover(client, q="Sends PAYMENTS") == ["globex-public"]  # description
        assert await discover(client, q="invoice") == ["acme-public", "globex-public"]
        assert await discover(client, q="nothing like this") == []

    async def test_underscore_is_literal(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_agent(client, "acme", "a-b", visibility="public")
        await create_agent(
            client, "acme", "moded", description="Runs in a_b mode", visibility="public"
        )
        # As a LIKE wildcard `_` would match the `-` of `a-b` as well.
        assert await discover(client, q="a_b") == ["moded"]

    async def test_percent_is_literal(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_agent(client, "acme", "discounter", display_name="50%off", visibility="public")
        await create_agent(
            client, "acme", "spelled-out", display_name="50 percent off", visibility="public"
        )
        # As LIKE wildcards `%` would match anything: every agent, and `50 percent off` for 50%off.
        assert await discover(client, q="%") == ["discounter"]
        assert await discover(client, q="50%off") == ["discounter"]

    async def test_backslash_is_literal(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_agent(
            client, "acme", "windows", description=r"Reads C:\invoices", visibility="public"
        )
        await create_agent(
            client, "acme", "plain", description="Reads C:invoices", visibility="public"
        )
        assert await discover(client, q="\\") == ["windows"]
        assert await discover(client, q=r"c:\inv") == ["windows"]
        assert await discover(client, q="\\%") == []

    async def test_q_never_reveals_private_agents_of_other_orgs(
        self, client: httpx.AsyncClient
    ) -> None:
        acme = bearer(await populate(client))
        assert await discover(client, acme, q="globex") == ["globex-public"]
        assert await discover(client, q="acme") == ["acme-public"]


class TestDiscoveryPagination:
    async def test_cursor_walks_every_agent_once_in_id_order(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        created = [
            (await create_agent(client, org, f"{org}-{i}", visibility="public"))["id"]
            for i in range(3)
            for org in ("acme", "globex")
        ]
        await create_agent(client, "acme", "hidden")  # private: never on any page
        seen: list[str] = []
        pages = 0
        params: dict[str, Any] = {"limit": 2}
        while True:
            response = await client.get(DISCOVERY, params=params)
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

    async def test_filters_apply_on_every_page(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        wanted = []
        for i in range(5):
            capabilities = ["crm"] if i % 2 == 0 else []
            agent = await create_agent(
                client, "acme", f"agent-{i}", capabilities=capabilities, visibility="public"
            )
            if capabilities:
                wanted.append(agent["id"])
        first = (await client.get(DISCOVERY, params={"capability": "crm", "limit": 2})).json()
        second = (
            await client.get(
                DISCOVERY,
                params={"capability": "crm", "limit": 2, "cursor": first["next_cursor"]},
            )
        ).json()
        assert [a["id"] for a in first["items"] + second["items"]] == wanted
        assert second["next_cursor"] is None

    async def test_garbled_cursor_is_400(self, client: httpx.AsyncClient) -> None:
        response = await client.get(DISCOVERY, params={"cursor": "not-a-cursor"})
        assert response.status_code == 400
        assert response.json()["code"] == "INVALID_CURSOR"
