"""Fixtures of the trust tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tabard.api.app import build_runtime, create_app
from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tests.conftest import create_agent, create_org
from tests.trust.support import CAPABILITIES


@pytest.fixture
async def replica(settings: Settings, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    """A second app on the same database (and kv store, when shared), as another replica."""
    runtime = build_runtime(settings, clock=clock)
    app = create_app(settings, runtime=runtime)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://replica.test") as http:
        yield http
    await runtime.kv.close()
    await runtime.bus.close()
    await runtime.database.close()


@pytest.fixture
async def agent(client: httpx.AsyncClient) -> dict[str, Any]:
    """Org `acme` with one agent holding `CAPABILITIES`."""
    await create_org(client, "acme")
    return await create_agent(client, "acme", "invoice-bot", capabilities=CAPABILITIES)
