"""Database engine, declarative base and the unit of work.

SQLite (WAL, foreign keys, busy timeout, write transactions taken with BEGIN IMMEDIATE so two
writers queue on the busy timeout instead of failing to upgrade a read lock) is the embedded
default; PostgreSQL runs through asyncpg, optionally behind PgBouncer in transaction mode.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import DateTime, MetaData, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from tabard.core.config import Settings

SQLITE_BUSY_TIMEOUT_MS = 15_000
_READ_ONLY = "tabard_read_only"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every table; stable constraint names for migrations."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


SQLITE_POOL_SIZE = 20


def create_engine(settings: Settings, *, for_migrations: bool = False) -> AsyncEngine:
    """The async engine for `settings`; `for_migrations` leaves transaction control to Alembic."""
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            # Opening a connection costs a driver thread and four PRAGMAs: keep enough of them
            # that bursts of concurrent requests reuse connections instead of churning overflow.
            pool_size=SQLITE_POOL_SIZE,
            max_overflow=SQLITE_POOL_SIZE,
            # Every transaction is ended by its unit of work, so the pool's extra ROLLBACK on
            # check-in would only cost another round trip to the driver's thread.
            pool_reset_on_return=None,
        )
        _configure_sqlite(engine, immediate=not for_migrations)
        return engine
    return create_async_engine(
        url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_pre_ping=True,
        connect_args=_pgbouncer_args() if settings.database_pgbouncer else {},
    )


def _pgbouncer_args() -> dict[str, Any]:
    # PgBouncer in transaction mode hands each transaction to any server connection, so named
    # prepared statements must be unique and never cached across transactions.
    return {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": lambda: f"__tabard_{uuid4().hex}__",
    }


def _configure_sqlite(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate and not read_only else "BEGIN")


async def insert_if_absent(
    session: AsyncSession, model: type[Base], key: str, **values: Any
) -> bool:
    """INSERT … ON CONFLICT (key) DO NOTHING on either backend; True when a row was inserted."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(model).values(**values).on_conflict_do_nothing(index_elements=[key])
    result = await session.execute(statement)
    return bool(getattr(result, "rowcount", 0))


class Database:
    """Owns the engine and hands out units of work."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=True)
        # On SQLite a read takes no write lock, so readers never queue behind writers (WAL).
        self._read_sessions = async_sessionmaker(
            engine.execution_options(**{_READ_ONLY: True}), expire_on_commit=False
        )
        # Called with the session after each unit of work commits (its `info` tells what it
        # wrote): how the outbox relay hears of new events without polling for them.
        self.commit_listeners: list[Callable[[AsyncSession], None]] = []
        # SQLite has one writer. Writers of this process queue here, in order, and start the
        # moment the previous one commits; left to SQLite's busy handler they would sleep and
        # poll (1 ms, 2 ms, … up to 100 ms at a time), which caps a busy process at a few
        # dozen writes per second. Other processes still meet the busy timeout.
        self._writer_locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        """One transaction: commits once on success, rolls back everything on any exception."""
        async with self._writer(), self._sessions() as session:
            async with session.begin():
                yield session
            for listener in self.commit_listeners:
                listener(session)

    def _writer(self) -> contextlib.AbstractAsyncContextManager[object]:
        if self.engine.dialect.name != "sqlite":
            return contextlib.nullcontext()
        loop = asyncio.get_running_loop()  # a lock serves the loop it was made on
        lock = self._writer_locks.get(loop)
        if lock is None:
            lock = self._writer_locks[loop] = asyncio.Lock()
        return lock

    @asynccontextmanager
    async def read_only(self) -> AsyncIterator[AsyncSession]:
        """A transaction for reads: on SQLite it takes no write lock (do not write in it)."""
        async with self._read_sessions() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.read_only() as session:
            await session.execute(text("SELECT 1"))

    def pool_status(self) -> tuple[int, int]:
        """(connections checked out, pool size) for the pool gauges."""
        pool: Any = self.engine.pool
        checked_out = int(pool.checkedout()) if hasattr(pool, "checkedout") else 0
        size = int(pool.size()) if hasattr(pool, "size") else 0
        return checked_out, size

    async def close(self) -> None:
        await self.engine.dispose()
