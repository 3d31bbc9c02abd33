"""Helpers of the trust tests: bindings, trust settings, invites and onboarding through the API."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text

from tabard.core.runtime import Runtime
from tests.conftest import ADMIN

HOUR, YEAR = 3600, 365 * 86400  # the bounds of an invite's lifetime
CAPABILITIES = ["invoices.read", "invoices.write", "payments.read"]


def bindings_url(org_id: str = "acme") -> str:
    return f"/v1/orgs/{org_id}/bindings"


def binding_url(binding_id: str, org_id: str = "acme") -> str:
    return f"/v1/orgs/{org_id}/bindings/{binding_id}"


async def create_binding(
    client: httpx.AsyncClient,
    agent_id: str,
    scope: list[str],
    org_id: str = "acme",
    headers: dict[str, str] = ADMIN,
) -> dict[str, Any]:
    """A pending binding (201 asserted)."""
    body = {"agent_id": agent_id, "scope": scope}
    response = await client.post(bindings_url(org_id), json=body, headers=headers)
    assert response.status_code == 201, response.text
    binding: dict[str, Any] = response.json()
    return binding


async def list_bindings(
    client: httpx.AsyncClient, org_id: str = "acme", **params: Any
) -> dict[str, Any]:
    """One page of the org's bindings (200 asserted), read as the platform admin."""
    response = await client.get(bindings_url(org_id), params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def move_binding(
    client: httpx.AsyncClient, binding_id: str, action: str, org_id: str = "acme"
) -> httpx.Response:
    """POST …/approve or …/revoke."""
    return await client.post(f"{binding_url(binding_id, org_id)}/{action}", headers=ADMIN)


async def approved_binding(
    client: httpx.AsyncClient, agent_id: str, scope: list[str], org_id: str = "acme"
) -> dict[str, Any]:
    binding = await create_binding(client, agent_id, scope, org_id)
    response = await move_binding(client, binding["id"], "approve", org_id)
    assert response.status_code == 200, response.text
    approved: dict[str, Any] = response.json()
    return approved


async def require_bindings(
    client: httpx.AsyncClient, required: bool = True, org_id: str = "acme"
) -> None:
    response = await client.patch(
        f"/v1/orgs/{org_id}/trust-settings", json={"binding_required": required}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"binding_required": required}


async def audit_events(
    client: httpx.AsyncClient, action: str, org_id: str = "acme"
) -> list[dict[str, Any]]:
    """The org's audit events of `action`, newest first (read as the platform admin)."""
    params = {"org": org_id, "action": action}
    response = await client.get("/v1/audit", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["items"]
    return events


async def create_invite(
    client: httpx.AsyncClient, kind: str = "join", **fields: Any
) -> dict[str, Any]:
    """A new invite as the platform admin (201 asserted); its secret is in `invite`."""
    response = await client.post("/v1/invites", json={"kind": kind, **fields}, headers=ADMIN)
    assert response.status_code == 201, response.text
    invite: dict[str, Any] = response.json()
    return invite


def join_body(secret: str, org_id: str = "globex", **extra: Any) -> dict[str, Any]:
    return {
        "invite": secret,
        "org": {
            "id": org_id,
            "display_name": org_id.title(),
            "contact": {"name": "Hank Scorpio", "email": f"hank@{org_id}.example"},
        },
        **extra,
    }


async def join(
    client: httpx.AsyncClient, secret: str, org_id: str = "globex", **extra: Any
) -> httpx.Response:
    return await client.post("/v1/onboarding/join", json=join_body(secret, org_id, **extra))


async def joined_org(client: httpx.AsyncClient, org_id: str = "globex") -> str:
    """A pending org, applied through a fresh join invite; returns its first key's secret."""
    invite = await create_invite(client, "join")
    response = await join(client, invite["invite"], org_id)
    assert response.status_code == 201, response.text
    assert response.json()["org"]["status"] == "pending"
    secret: str = response.json()["api_key"]["secret"]
    return secret


async def org_status(client: httpx.AsyncClient, org_id: str) -> str:
    response = await client.get(f"/v1/orgs/{org_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


async def invite_status(client: httpx.AsyncClient, invite_id: str) -> str:
    response = await client.get(f"/v1/invites/{invite_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


async def attach(client: httpx.AsyncClient, secret: str) -> httpx.Response:
    body = {"invite": secret, "ca": {"source": "generate"}}
    return await client.post("/v1/onboarding/attach", json=body)


def assert_invite_invalid(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "INVITE_INVALID"


async def row_counts(runtime: Runtime) -> tuple[int, int, int]:
    """(organizations, org API keys, CAs) in the database, read directly."""
    async with runtime.database.read_only() as session:
        counted = [
            (await session.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one()
            for table in ("organizations", "org_api_keys", "certificate_authorities")
        ]
    return counted[0], counted[1], counted[2]
