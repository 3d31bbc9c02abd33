"""No tenant sees or changes another tenant's data: every route with an id answers 404 across orgs.

The test walks the app's router, so a new route with an `{org_id}` or another id is covered
without anyone remembering to add it here.
"""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI

from tests.conftest import ADMIN, bearer, create_org, create_org_key

_BODIES = {
    "POST /v1/orgs/{org_id}/keys": {"name": "stolen"},
    "PATCH /v1/orgs/{org_id}": {"display_name": "Owned"},
}
# Routes only the platform admin may call answer 403 to any org key, before looking at the id.
_ADMIN_ONLY = {
    "PATCH /v1/orgs/{org_id}",
    "DELETE /v1/orgs/{org_id}",
    "POST /v1/orgs/{org_id}/suspend",
    "POST /v1/orgs/{org_id}/reactivate",
}


def _routes_with_ids(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path template) with a path parameter, from the app's own route table."""
    paths = app.openapi()["paths"]
    return [
        (method.upper(), path)
        for path, operations in paths.items()
        if "{" in path
        for method in operations
    ]


class TestCrossTenantAccess:
    async def test_every_route_with_an_id_hides_other_orgs(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        globex_key_secret = await create_org_key(client, "globex")
        globex_key_id = (await client.get("/v1/orgs/globex/keys", headers=ADMIN)).json()[0]["id"]
        globex_event = (await client.get("/v1/audit?org=globex", headers=ADMIN)).json()["items"][0]
        ids = {"org_id": "globex", "key_id": globex_key_id, "event_id": globex_event["id"]}
        acme_key = await create_org_key(client, "acme")

        app: FastAPI = client._transport.app  # type: ignore[attr-defined]
        routes = _routes_with_ids(app)
        assert len(routes) >= 8
        for method, template in routes:
            path = re.sub(r"\{(\w+)\}", lambda match: ids[match.group(1)], template)
            signature = f"{method} {template}"
            response = await client.request(
                method, path, json=_BODIES.get(signature), headers=bearer(acme_key)
            )
            expected = 403 if signature in _ADMIN_ONLY else 404
            assert response.status_code == expected, (signature, response.text)
            assert "Globex" not in response.text  # never the other tenant's data

        # globex is untouched: its key still works and its org is unchanged.
        assert (await client.get("/v1/me", headers=bearer(globex_key_secret))).status_code == 200
        assert (await client.get("/v1/orgs/globex", headers=ADMIN)).json()[
            "display_name"
        ] == "Globex"

    async def test_audit_filter_on_another_org_is_404(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        acme_key = await create_org_key(client, "acme")
        response = await client.get("/v1/audit", params={"org": "globex"}, headers=bearer(acme_key))
        assert response.status_code == 404

    async def test_org_key_sees_only_its_own_audit_events(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        acme_key = await create_org_key(client, "acme")
        events = (await client.get("/v1/audit", headers=bearer(acme_key))).json()["items"]
        assert events
        assert {event["org_id"] for event in events} == {"acme"}
