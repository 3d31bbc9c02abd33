"""BulkInsert on SQLite stores exactly what executemany would, in one statement."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest_asyncio
from sqlalchemy import JSON, Boolean, Column, Float, Integer, MetaData, String, Table, event, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from tabard.core.bulk import BulkInsert
from tabard.core.db import UTCDateTime

METADATA = MetaData()
COLUMNS = ("id", "name", "count", "ratio", "flag", "seen_at", "data")


def table(name: str) -> Table:
    return Table(
        name,
        METADATA,
        Column("id", String(36), primary_key=True),
        Column("name", String(100)),
        Column("count", Integer),
        Column("ratio", Float),
        Column("flag", Boolean),
        Column("seen_at", UTCDateTime()),
        Column("data", JSON),
    )


VIA_EXECUTEMANY, VIA_BULK = table("via_executemany"), table("via_bulk")
ROWS: list[dict[str, Any]] = [
    {
        "id": "a",
        "name": 'café ☕ "quoted" \\ back',
        "count": 2**53 + 1,
        "ratio": 0.1,
        "flag": True,
        "seen_at": datetime(2026, 12, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "data": {"nested": [1, 2.5, None, "ü"], "empty": {}},
    },
    {
        "id": "b",
        "name": None,
        "count": -7,
        "ratio": 3.0,
        "flag": False,
        "seen_at": None,
        "data": None,
    },
]


@pytest_asyncio.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'bulk.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
    yield engine
    await engine.dispose()


async def stored(session: AsyncSession, name: str) -> list[tuple[Any, ...]]:
    """Each column's SQLite storage class and raw value, past every type conversion."""
    probes = ", ".join(f"typeof({column}), {column}" for column in COLUMNS)
    result = await session.execute(text(f"SELECT {probes} FROM {name} ORDER BY id"))
    return [tuple(row) for row in result]


class TestBulkInsertOnSqlite:
    async def test_stores_what_executemany_stores(self, engine: AsyncEngine) -> None:
        async with AsyncSession(engine) as session, session.begin():
            await session.execute(VIA_EXECUTEMANY.insert(), ROWS)
            await BulkInsert(VIA_BULK, COLUMNS).run(session, ROWS)
            expected = await stored(session, "via_executemany")
            assert await stored(session, "via_bulk") == expected
        assert [row[1] for row in expected] == ["a", "b"]

    async def test_a_thousand_rows_are_one_statement(self, engine: AsyncEngine) -> None:
        statements: list[str] = []
        sync_engine = engine.sync_engine
        event.listen(sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        rows = [{**ROWS[1], "id": f"r{n:04}", "count": n} for n in range(1000)]
        async with AsyncSession(engine) as session, session.begin():
            await BulkInsert(VIA_BULK, COLUMNS).run(session, rows)
            total = await session.scalar(text("SELECT sum(count) FROM via_bulk"))
        inserts = [statement for statement in statements if statement.startswith("INSERT")]
        assert len(inserts) == 1
        assert total == sum(range(1000))

    async def test_a_finishing_clause_applies(self, engine: AsyncEngine) -> None:
        def add_counts(statement: sqlite.Insert) -> Any:
            excluded = statement.excluded
            return statement.on_conflict_do_update(
                index_elements=["id"], set_={"count": VIA_BULK.c.count + excluded.count}
            )

        upsert = BulkInsert(VIA_BULK, COLUMNS, add_counts)
        async with AsyncSession(engine) as session, session.begin():
            await upsert.run(session, ROWS)
            await upsert.run(session, ROWS)
            counts = (await session.execute(text("SELECT count FROM via_bulk ORDER BY id"))).all()
        assert [count for (count,) in counts] == [2 * (2**53 + 1), -14]
