"""Organizations through the HTTP API: lifecycle, validation, pagination, status."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ADMIN, bearer, create_org, create_org_key


class TestCreateOrg:
    async def test_admin_creates_an_active_org(self, client: httpx.AsyncClient) -> None:
        body = await create_org(client, "acme")
        assert body["id"] == "acme"
        assert body["status"] == "active"
        assert body["tier"] == "free"

    async def test_duplicate_slug_is_a_conflict_and_creates_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        response = await client.post(
            "/v1/orgs", json={"id": "acme", "display_name": "Other"}, headers=ADMIN
        )
        assert response.status_code == 409
        assert response.json()["code"] == "ORG_ALREADY_EXISTS"
        read = await client.get("/v1/orgs/acme", headers=ADMIN)
        assert read.json()["display_name"] == "Acme"

    @pytest.mark.parametrize("slug", ["A", "-acme", "acme_corp", "x" * 64, "a"])
    async def test_invalid_slug_is_422_naming_the_field(
        self, client: httpx.AsyncClient, slug: str
    ) -> None:
        response = await client.post(
            "/v1/orgs", json={"id": slug, "display_name": "X"}, headers=ADMIN
        )
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["code"] == "VALIDATION_FAILED"
        assert problem["detail"].startswith("body.id")
        assert (await client.get("/v1/orgs", headers=ADMIN)).json()["items"] == []

    async def test_malformed_json_is_422_not_500(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/orgs",
            content=b"{not json",
            headers={**ADMIN, "content-type": "application/json"},
        )
        assert response.status_code == 422
        assert response.json()["code"] == "VALIDATION_FAILED"

    async def test_unknown_field_is_rejected(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/orgs", json={"id": "acme", "display_name": "A", "owner": "x"}, headers=ADMIN
        )
        assert response.status_code == 422
        assert "owner" in response.json()["detail"]

    async def test_org_key_cannot_create_orgs(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        key = await create_org_key(client, "acme")
        response = await client.post(
            "/v1/orgs", json={"id": "evil", "display_name": "E"}, headers=bearer(key)
        )
        assert response.status_code == 403
        assert response.json()["code"] == "NOT_PERMITTED"


class TestListOrgs:
    async def test_cursor_pagination_walks_every_org_once(self, client: httpx.AsyncClient) -> None:
        slugs = [f"org-{index:02d}" for index in range(7)]
        for slug in slugs:
            await create_org(client, slug)
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/orgs", params=params, headers=ADMIN)).json()
            seen += [org["id"] for org in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == slugs

    async def test_garbled_cursor_is_400(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/orgs", params={"cursor": "%%%"}, headers=ADMIN)
        assert response.status_code == 400
        assert response.json()["code"] == "INVALID_CURSOR"

    async def test_limit_out_of_range_is_422(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/orgs", params={"limit": 0}, headers=ADMIN)
        assert response.status_code == 422
        assert response.json()["detail"].startswith("query.limit")


class TestUpdateOrg:
    async def test_patch_changes_only_given_fields(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        response = await client.patch("/v1/orgs/acme", json={"tier": "pro"}, headers=ADMIN)
        assert response.status_code == 200
        assert response.json()["tier"] == "pro"
        assert response.json()["display_name"] == "Acme"

    async def test_unknown_tier_is_422(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        response = await client.patch("/v1/orgs/acme", json={"tier": "gold"}, headers=ADMIN)
        assert response.status_code == 422

    async def test_missing_org_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.patch("/v1/orgs/ghost", json={"tier": "pro"}, headers=ADMIN)
        assert response.status_code == 404
        assert response.json()["code"] == "ORG_NOT_FOUND"


class TestSuspension:
    async def test_suspended_org_keys_get_403_until_reactivated(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        key = await create_org_key(client, "acme")
        assert (await client.post("/v1/orgs/acme/suspend", headers=ADMIN)).status_code == 200
        denied = await client.get("/v1/me", headers=bearer(key))
        assert denied.status_code == 403
        assert denied.json()["code"] == "ORG_SUSPENDED"
        assert (await client.post("/v1/orgs/acme/reactivate", headers=ADMIN)).status_code == 200
        assert (await client.get("/v1/me", headers=bearer(key))).status_code == 200

    async def test_suspending_twice_is_a_conflict(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await client.post("/v1/orgs/acme/suspend", headers=ADMIN)
        again = await client.post("/v1/orgs/acme/suspend", headers=ADMIN)
        assert again.status_code == 409
        assert again.json()["code"] == "ORG_STATE_CONFLICT"


class TestDeleteOrg:
    async def test_delete_removes_org_and_its_keys(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        key = await create_org_key(client, "acme")
        assert (await client.delete("/v1/orgs/acme", headers=ADMIN)).status_code == 204
        assert (await client.get("/v1/orgs/acme", headers=ADMIN)).status_code == 404
        assert (await client.get("/v1/me", headers=bearer(key))).status_code == 401

    async def test_delete_keeps_the_audit_trail(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await client.delete("/v1/orgs/acme", headers=ADMIN)
        events = (await client.get("/v1/audit", params={"org": "acme"}, headers=ADMIN)).json()
        assert [e["action"] for e in events["items"]] == ["org.deleted", "org.created"]
