"""Helpers of the registration tests: registration tokens through the API, POST /v1/register
with one, what the database holds, and who a registered client secret logs in as."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from sqlalchemy import text

from tabard.core.runtime import Runtime
from tests.conftest import ADMIN, bearer, create_org

TOKENS = "/v1/orgs/acme/registration-tokens"
AGENTS = "/v1/orgs/acme/agents"


async def create_token(
    client: httpx.AsyncClient, headers: dict[str, str] = ADMIN, **body: Any
) -> dict[str, Any]:
    """A registration token of `acme` (the create response: the only one with `token`)."""
    response = await client.post(TOKENS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    token: dict[str, Any] = response.json()
    return token


async def acme_token(client: httpx.AsyncClient, **preset: Any) -> dict[str, Any]:
    """Org `acme` and a registration token with `preset`."""
    await create_org(client, "acme")
    return await create_token(client, preset=preset)


async def read_token(client: httpx.AsyncClient, token: dict[str, Any]) -> dict[str, Any]:
    response = await client.get(f"{TOKENS}/{token['id']}", headers=ADMIN)
    assert response.status_code == 200, response.text
    read: dict[str, Any] = response.json()
    return read


async def token_status(client: httpx.AsyncClient, token: dict[str, Any]) -> str:
    status: str = (await read_token(client, token))["status"]
    return status


async def revoke(client: httpx.AsyncClient, token: dict[str, Any]) -> httpx.Response:
    return await client.delete(f"{TOKENS}/{token['id']}", headers=ADMIN)


async def register(client: httpx.AsyncClient, token: dict[str, Any], **body: Any) -> httpx.Response:
    return await client.post("/v1/register", json=body, headers=bearer(token["token"]))


async def registered(
    client: httpx.AsyncClient, token: dict[str, Any], **body: Any
) -> dict[str, Any]:
    response = await register(client, token, **body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def read_agent(client: httpx.AsyncClient, agent_id: str) -> dict[str, Any]:
    response = await client.get(f"{AGENTS}/{agent_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    agent: dict[str, Any] = response.json()
    return agent


async def audit_events(client: httpx.AsyncClient, action: str) -> list[dict[str, Any]]:
    params = {"org": "acme", "action": action}
    response = await client.get("/v1/audit", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["items"]
    return events


async def row_counts(runtime: Runtime) -> tuple[int, int, int]:
    """(agents, client credentials, agent certificates) in the database, read directly."""
    async with runtime.database.read_only() as session:
        counted = [
            (await session.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one()
            for table in ("agents", "client_credentials", "agent_certificates")
        ]
    return counted[0], counted[1], counted[2]


async def principal(client: httpx.AsyncClient, client_id: str, secret: str) -> dict[str, Any]:
    """Who an access token got with the client secret (RFC 6749 §4.4) says it is."""
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    response = await client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200, response.text
    me = await client.get("/v1/me", headers=bearer(response.json()["access_token"]))
    assert me.status_code == 200, me.text
    who: dict[str, Any] = me.json()
    return who


def assert_invalid_token(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "REGISTRATION_TOKEN_INVALID"


def assert_invalid_field(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field
