"""Fixtures of the operations tests: settings a test may override, and a second app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tabard.api.app import build_runtime, create_app
from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tabard.core.runtime import Runtime


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Settings to change for a test: override this fixture (or parametrize it)."""
    return {}


@pytest.fixture
def settings(settings: Settings, overrides: dict[str, Any]) -> Settings:
    """The shared settings (SQLite and PostgreSQL) with this test's overrides."""
    return settings.model_copy(update=overrides)


@pytest.fixture
async def replica(
    settings: Settings, clock: FrozenClock, runtime: Runtime
) -> AsyncIterator[httpx.AsyncClient]:
    """Another process on the same database and kv store: a second replica, or the same server
    after a restart (nothing of the first app's memory carries over)."""
    other = build_runtime(settings, clock=clock, kv=runtime.kv)
    app = create_app(settings, runtime=other)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://replica.test") as http:
        yield http
    # The kv store is the first runtime's: its fixture closes it.
    await other.bus.close()
    await other.database.close()
