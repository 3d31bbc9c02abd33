"""The platform admin secret: generated once, replaceable, not left at its first-boot value."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tabard.audit.models import AuditEvent
from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tabard.core.db import Database, create_engine
from tabard.tenancy.authentication import ensure_admin_secret
from tabard.tenancy.errors import AdminSecretNotRotated


@pytest.fixture
async def database(settings: Settings) -> Database:
    return Database(create_engine(settings))


async def _ensure(database: Database, configured: str | None, **kwargs: bool) -> str | None:
    async with database.unit_of_work() as session:
        return await ensure_admin_secret(session, configured, FrozenClock(), **kwargs)


class TestEnsureAdminSecret:
    async def test_first_boot_generates_once(self, database: Database) -> None:
        first = await _ensure(database, None)
        assert first is not None
        assert first.startswith("tbd_admin_")
        assert await _ensure(database, None) is None
        await database.close()

    async def test_configured_secret_replaces_the_generated_one(self, database: Database) -> None:
        await _ensure(database, None)
        assert await _ensure(database, "operator-chosen-secret-" + "x" * 20) is None
        async with database.read_only() as session:
            actions = (await session.execute(select(AuditEvent.details))).scalars().all()
        assert actions == [{"generated": True}, {"generated": False}]
        await database.close()

    async def test_production_refuses_the_first_boot_secret(self, database: Database) -> None:
        generated = await _ensure(database, None)
        assert generated is not None
        with pytest.raises(AdminSecretNotRotated):
            await _ensure(database, generated, production=True)
        await database.close()

    async def test_unchanged_secret_is_not_rewritten(self, database: Database) -> None:
        secret = "operator-chosen-secret-" + "y" * 20
        await _ensure(database, secret)
        await _ensure(database, secret)
        async with database.read_only() as session:
            events = (await session.execute(select(AuditEvent))).scalars().all()
        assert len(events) == 1
        await database.close()
