"""Migrations are the only way the schema changes, and they agree with the models."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from tabard.core.config import Settings, load_settings
from tabard.core.db import Base, Database, create_engine
from tabard.core.migrations import MigrationError, status, upgrade


def _diff(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


class TestModelsMatchMigrations:
    async def test_no_difference_after_upgrade(self, settings: Settings) -> None:
        engine = create_engine(settings, for_migrations=True)
        async with engine.connect() as connection:
            differences = await connection.run_sync(_diff)
        await engine.dispose()
        assert differences == []

    async def test_status_reports_nothing_pending(self, settings: Settings) -> None:
        current = await status(settings)
        assert current.current == current.head
        assert current.pending == []


class TestUpgrade:
    async def test_fresh_sqlite_database_is_migrated(self, tmp_path: Path) -> None:
        settings = load_settings(data_dir=tmp_path)
        before = await status(settings)
        assert before.current is None
        assert before.pending[-1] == before.head
        assert before.pending[0] == "0001"
        assert await upgrade(settings) == before.pending
        assert await upgrade(settings) == []  # idempotent

    async def test_sqlite_runs_in_wal_with_foreign_keys(self, tmp_path: Path) -> None:
        settings = load_settings(data_dir=tmp_path)
        await upgrade(settings)
        database = Database(create_engine(settings))
        async with database.unit_of_work() as session:
            journal = (await session.execute(text("PRAGMA journal_mode"))).scalar()
            foreign_keys = (await session.execute(text("PRAGMA foreign_keys"))).scalar()
        await database.close()
        assert (journal, foreign_keys) == ("wal", 1)

    async def test_failed_migration_names_itself_and_the_database_error(
        self, tmp_path: Path
    ) -> None:
        settings = load_settings(data_dir=tmp_path)
        engine = create_engine(settings, for_migrations=True)
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE organizations (id TEXT)"))
        await engine.dispose()
        with pytest.raises(MigrationError) as raised:
            await upgrade(settings)
        message = str(raised.value)
        assert message.startswith("migration 0001 (foundation")
        assert "organizations already exists" in message


@pytest.mark.postgres
class TestConcurrentReplicas:
    async def test_parallel_upgrades_apply_each_migration_once(self, postgres_url: str) -> None:
        settings = load_settings(database_url=postgres_url)
        engine = create_async_engine(settings.resolved_database_url)
        async with engine.begin() as connection:
            await connection.execute(text("DROP SCHEMA public CASCADE"))
            await connection.execute(text("CREATE SCHEMA public"))
        await engine.dispose()
        pending = (await status(settings)).pending
        results = await asyncio.gather(*(upgrade(settings) for _ in range(4)))
        applied = [revision for result in results for revision in result]
        assert sorted(applied) == sorted(pending)  # each migration once, by one replica
        assert (await status(settings)).pending == []
