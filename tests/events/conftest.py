"""Fixtures of the events tests: the app itself (its `Events` drives the relay and the sender
by hand), settings a test may override, and webhook receivers on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tabard.api.app import create_app
from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tabard.core.runtime import Runtime
from tabard.events.service import Events
from tests.conftest import ADMIN, create_org
from tests.support.webhook_receiver import Receiver


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Settings to change for a test: override this fixture (or parametrize it)."""
    return {}


@pytest.fixture
def settings(settings: Settings, overrides: dict[str, Any]) -> Settings:
    return settings.model_copy(update=overrides)


@pytest.fixture
def app(settings: Settings, runtime: Runtime) -> FastAPI:
    return create_app(settings, runtime=runtime)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tabard.test") as http:
        yield http


@pytest.fixture
async def events(app: FastAPI) -> AsyncIterator[Events]:
    """The app's events machinery; the background jobs do not run, the test calls them."""
    events: Events = app.state.events
    yield events
    await events.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


async def subscribe(
    client: httpx.AsyncClient,
    receiver: Receiver,
    org_id: str = "acme",
    event_types: list[str] | None = None,
    headers: dict[str, str] = ADMIN,
) -> dict[str, Any]:
    """A subscription of `org_id` to `receiver`, whose secret the receiver then verifies."""
    response = await client.post(
        f"/v1/orgs/{org_id}/webhooks",
        json={"url": receiver.url, "event_types": event_types or ["*"]},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    subscription: dict[str, Any] = response.json()
    receiver.secrets.append(subscription["secret"])
    return subscription


async def deliver(events: Events) -> None:
    """Relay what is committed and wait for the attempts it started (and any due)."""
    await events.relay()
    await events.send_due()
    await events.sender.drain()


async def org_with_webhook(
    client: httpx.AsyncClient, receiver: Receiver, org_id: str = "acme", **kwargs: Any
) -> dict[str, Any]:
    await create_org(client, org_id)
    return await subscribe(client, receiver, org_id, **kwargs)


__all__ = ["FrozenClock", "deliver", "org_with_webhook", "subscribe"]
