"""Shared fixtures: which real backends this run may use.

A backend whose URL variable is unset is skipped with the reason. In CI (`CI=true`) the URL must be
set and reachable: an unreachable service fails the run instead of silently skipping.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tabard.api.app import build_runtime, create_app
from tabard.core.clock import FrozenClock, SystemClock
from tabard.core.config import Settings, load_settings
from tabard.core.db import Base
from tabard.core.migrations import upgrade
from tabard.core.runtime import Runtime
from tabard.tenancy.authentication import ensure_admin_secret

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def service_url(variable: str, default_port: int) -> str:
    """Return the service URL from `variable`, or skip (fail in CI) when it is missing or down."""
    url = os.environ.get(variable, "")
    if not url:
        if IN_CI:
            pytest.fail(f"{variable} is not set; CI must run the tests of this backend")
        pytest.skip(f"{variable} is not set: the tests of this backend need a real server")
    if not _reachable(url, default_port):
        message = f"{variable}={url} is unreachable"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return service_url("TABARD_TEST_DATABASE_URL", 5432)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return service_url("TABARD_TEST_REDIS_URL", 6379)


@pytest.fixture(scope="session")
def nats_url() -> str:
    return service_url("TABARD_TEST_NATS_URL", 4222)


ADMIN_SECRET = "test-admin-secret-that-is-long-enough-0123456789"
_TABLES = (
    "audit_events, audit_chain_heads, org_api_keys, organizations, outbox_events, platform_admin"
)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, copied for each test (migrating per test would be slow)."""
    directory = tmp_path_factory.mktemp("template")
    settings = load_settings(data_dir=directory)
    asyncio.run(upgrade(settings))
    return directory / "tabard.db"


@pytest.fixture(scope="session")
def migrated_postgres(postgres_url: str) -> str:
    async def reset_and_migrate() -> None:
        engine = create_async_engine(Settings(database_url=postgres_url).resolved_database_url)
        async with engine.begin() as connection:
            await connection.execute(text("DROP SCHEMA public CASCADE"))
            await connection.execute(text("CREATE SCHEMA public"))
        await engine.dispose()
        await upgrade(load_settings(database_url=postgres_url))

    asyncio.run(reset_and_migrate())
    return postgres_url


async def _truncate_postgres(url: str) -> None:
    engine = create_async_engine(Settings(database_url=url).resolved_database_url)
    async with engine.begin() as connection:
        tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
        await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings on a migrated, empty database of each kind."""
    if request.param == "sqlite":
        shutil.copy(request.getfixturevalue("sqlite_template"), tmp_path / "tabard.db")
        yield load_settings(data_dir=tmp_path, log_format="text")
        return
    url = request.getfixturevalue("migrated_postgres")
    asyncio.run(_truncate_postgres(url))
    yield load_settings(data_dir=tmp_path, database_url=url, log_format="text")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(SystemClock().now())


@pytest_asyncio.fixture
async def runtime(settings: Settings, clock: FrozenClock) -> AsyncIterator[Runtime]:
    runtime = build_runtime(settings, clock=clock)
    async with runtime.database.unit_of_work() as session:
        await ensure_admin_secret(session, ADMIN_SECRET, clock)
    yield runtime
    await runtime.kv.close()
    await runtime.bus.close()
    await runtime.database.close()


@pytest_asyncio.fixture
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the real ASGI app (no network, no mocks)."""
    app = create_app(settings, runtime=runtime)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tabard.test") as http:
        yield http


ADMIN = {"Authorization": f"Bearer {ADMIN_SECRET}"}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def create_org(client: httpx.AsyncClient, org_id: str = "acme") -> dict[str, object]:
    response = await client.post(
        "/v1/orgs", json={"id": org_id, "display_name": org_id.title()}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def create_org_key(client: httpx.AsyncClient, org_id: str = "acme") -> str:
    response = await client.post(f"/v1/orgs/{org_id}/keys", json={"name": "ci"}, headers=ADMIN)
    assert response.status_code == 201, response.text
    secret: str = response.json()["secret"]
    return secret


async def create_agent(
    client: httpx.AsyncClient,
    org_id: str = "acme",
    name: str = "invoice-bot",
    headers: dict[str, str] = ADMIN,
    **fields: Any,
) -> dict[str, Any]:
    """Register an agent through the API (201 asserted) and return its JSON."""
    response = await client.post(
        f"/v1/orgs/{org_id}/agents", json={"name": name, **fields}, headers=headers
    )
    assert response.status_code == 201, response.text
    agent: dict[str, Any] = response.json()
    return agent
