"""Helpers of the webhook subscription suites: the API calls they make and what they read back."""

from __future__ import annotations

import base64
import re
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import text

from tabard.core.runtime import Runtime
from tabard.events.service import Events
from tests.conftest import ADMIN, ADMIN_SECRET, create_agent
from tests.events.conftest import deliver
from tests.support.webhook_receiver import Received, Receiver

WEBHOOKS = "/v1/orgs/acme/webhooks"
URL = "http://127.0.0.1:9/hook"  # loopback; nothing is sent to it in the tests that use it
PRODUCTION = {
    "env": "production",
    "public_url": "https://tabard.example",
    "admin_secret": SecretStr(ADMIN_SECRET),
    "secret_key": SecretStr("production-secret-key-0123456789abcdef"),
    "master_key": SecretStr("production-master-key-0123456789abcdef"),
}
SIGNATURE = re.compile(r"v1,[A-Za-z0-9+/]{43}=")
RETRY_DUE = 15  # seconds: the first retry comes 10 s (±20 %) after a failure


async def create_webhook(
    client: httpx.AsyncClient, headers: dict[str, str] = ADMIN, **fields: Any
) -> httpx.Response:
    return await client.post(
        WEBHOOKS, json={"url": URL, "event_types": ["*"], **fields}, headers=headers
    )


async def created(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await create_webhook(client, **fields)
    assert response.status_code == 201, response.text
    subscription: dict[str, Any] = response.json()
    return subscription


async def read(client: httpx.AsyncClient, subscription: dict[str, Any]) -> dict[str, Any]:
    response = await client.get(f"{WEBHOOKS}/{subscription['id']}", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def listed(client: httpx.AsyncClient, org_id: str = "acme") -> list[dict[str, Any]]:
    response = await client.get(f"/v1/orgs/{org_id}/webhooks", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


async def patch(
    client: httpx.AsyncClient, subscription: dict[str, Any], **fields: Any
) -> httpx.Response:
    return await client.patch(f"{WEBHOOKS}/{subscription['id']}", json=fields, headers=ADMIN)


async def rotate(
    client: httpx.AsyncClient, subscription: dict[str, Any], **body: Any
) -> httpx.Response:
    url = f"{WEBHOOKS}/{subscription['id']}/rotate-secret"
    return await client.post(url, json=body, headers=ADMIN)


async def rotated(client: httpx.AsyncClient, subscription: dict[str, Any], **body: Any) -> str:
    response = await rotate(client, subscription, **body)
    assert response.status_code == 200, response.text
    secret: str = response.json()["secret"]
    return secret


async def audit_events(client: httpx.AsyncClient, action: str) -> list[dict[str, Any]]:
    """The org's audit events of `action`, newest first."""
    params = {"org": "acme", "action": action}
    response = await client.get("/v1/audit", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["items"]
    return events


async def stored(runtime: Runtime, subscription_id: str) -> dict[str, Any]:
    """The subscription's row as the database holds it."""
    statement = text("SELECT * FROM webhook_subscriptions WHERE id = :id")
    async with runtime.database.read_only() as session:
        row = (await session.execute(statement, {"id": subscription_id})).mappings().one()
    return dict(row)


async def delivery_rows(runtime: Runtime) -> tuple[int, int]:
    """(deliveries, attempts) in the database, of every subscription."""
    async with runtime.database.read_only() as session:
        deliveries, attempts = [
            int((await session.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one())
            for table in ("webhook_deliveries", "webhook_attempts")
        ]
    return deliveries, attempts


def key_of(secret: str) -> bytes:
    assert secret.startswith("whsec_")
    return base64.b64decode(secret.removeprefix("whsec_"), validate=True)


def signatures(received: Received) -> list[str]:
    return received.headers["webhook-signature"].split(" ")


async def delivered(
    client: httpx.AsyncClient, events: Events, receiver: Receiver, agent_name: str
) -> Received:
    """The one webhook the registration of an agent named `agent_name` caused."""
    before = len(receiver.received)
    await create_agent(client, "acme", agent_name)
    await deliver(events)
    assert len(receiver.received) == before + 1, receiver.received
    received = receiver.received[-1]
    assert received.event["data"]["agent_name"] == agent_name
    return received


async def outcomes(
    client: httpx.AsyncClient, bodies: dict[str, dict[str, Any]]
) -> dict[str, tuple[int, str]]:
    """(status, problem code) of creating acme's webhook with each of `bodies`, by name."""
    found = {}
    for name, fields in bodies.items():
        response = await create_webhook(client, **fields)
        found[name] = (response.status_code, response.json().get("code", ""))
    return found
