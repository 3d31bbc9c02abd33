"""Helpers of the token-service tests: an org with an agent and its client secret, token calls."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.conftest import ADMIN, create_agent, create_org

TOKEN_URL = "/oauth2/token"
ISSUER = "http://127.0.0.1:8080"  # the default public URL the test settings keep
CAPABILITIES = ["invoices.read", "invoices.write", "payments.read"]


@dataclass(frozen=True)
class AgentClient:
    """A registered agent with one client_secret credential."""

    agent: dict[str, Any]
    client_id: str
    secret: str
    credential_id: str

    @property
    def basic(self) -> dict[str, str]:
        raw = f"{self.client_id}:{self.secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


async def agent_client(
    client: httpx.AsyncClient,
    org_id: str = "acme",
    name: str = "invoice-bot",
    *,
    create_org_too: bool = True,
    capabilities: list[str] | None = None,
) -> AgentClient:
    if create_org_too:
        await create_org(client, org_id)
    agent = await create_agent(client, org_id, name, capabilities=capabilities or CAPABILITIES)
    url = f"/v1/orgs/{org_id}/agents/{agent['id']}/credentials"
    response = await client.post(url, json={"name": "main"}, headers=ADMIN)
    assert response.status_code == 201, response.text
    body = response.json()
    return AgentClient(agent, body["client_id"], body["client_secret"], body["id"])


async def request_token(
    client: httpx.AsyncClient,
    agent: AgentClient,
    headers: dict[str, str] | None = None,
    **form: str,
) -> httpx.Response:
    data = {"grant_type": "client_credentials", **form}
    return await client.post(TOKEN_URL, data=data, headers={**agent.basic, **(headers or {})})


async def access_token(client: httpx.AsyncClient, agent: AgentClient, **form: str) -> str:
    response = await request_token(client, agent, None, **form)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def decode_with_published_keys(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    """Verify `token` with joserfc using only the published JWKS (an independent verifier)."""
    jwks = (await client.get("/.well-known/jwks.json")).json()
    decoded = jwt.decode(
        token, KeySet.import_key_set(jwks), algorithms=["ES256", "Ed25519", "RS256"]
    )
    return dict(decoded.claims)


def header_of(token: str) -> dict[str, Any]:
    encoded = token.split(".")[0]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    )
    return decoded
