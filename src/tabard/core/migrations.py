"""Schema migrations (Alembic) run from code: on boot, by `tabard db upgrade`, and in tests.

On PostgreSQL a session advisory lock makes concurrent replicas take turns: the first applies
the pending migrations, the others then find nothing to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from tabard.core.config import Settings
from tabard.core.db import create_engine

# An arbitrary constant shared by every replica: "tabard migrations" as a 63-bit number.
ADVISORY_LOCK_KEY = 0x7461626172646D67


class MigrationError(Exception):
    """A migration failed; the message names it and carries the database's error."""


@dataclass
class MigrationStatus:
    current: str | None
    head: str | None
    pending: list[str] = field(default_factory=list)


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", "tabard:migrations")
    config.attributes["connection"] = connection
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def _pending(current: str | None) -> list[str]:
    scripts = _scripts()
    revisions = scripts.iterate_revisions("heads", current or "base")
    return [revision.revision for revision in reversed(list(revisions))]


def _status_sync(connection: Connection) -> MigrationStatus:
    current = MigrationContext.configure(connection).get_current_revision()
    return MigrationStatus(
        current=current, head=_scripts().get_current_head(), pending=_pending(current)
    )


def _upgrade_sync(connection: Connection, applied: list[str]) -> None:
    config = _config(connection)

    def on_apply(**kwargs: Any) -> None:
        applied.append(kwargs["step"].up_revision_id)

    config.attributes["on_version_apply"] = on_apply
    command.upgrade(config, "heads")


async def status(settings: Settings) -> MigrationStatus:
    engine = create_engine(settings, for_migrations=True)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_status_sync)
    finally:
        await engine.dispose()


async def upgrade(settings: Settings) -> list[str]:
    """Apply every pending migration; returns the revisions applied (empty when up to date)."""
    engine = create_engine(settings, for_migrations=True)
    applied: list[str] = []
    try:
        async with engine.connect() as connection:
            postgres = connection.dialect.name == "postgresql"
            if postgres:
                await connection.execute(
                    text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
                await connection.commit()
            try:
                before = await connection.run_sync(_status_sync)
                await _apply(connection, before, applied)
            finally:
                if postgres:
                    await connection.rollback()
                    await connection.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
                    )
                    await connection.commit()
    finally:
        await engine.dispose()
    return applied


async def _apply(connection: Any, before: MigrationStatus, applied: list[str]) -> None:
    try:
        await connection.run_sync(_upgrade_sync, applied)
        await connection.commit()
    except Exception as exc:
        failed = next((rev for rev in before.pending if rev not in applied), "unknown")
        script = _scripts().get_revision(failed) if failed != "unknown" else None
        name = f"{failed} ({script.doc})" if script is not None else failed
        cause = getattr(exc, "orig", None) or exc
        raise MigrationError(f"migration {name} failed: {cause}") from exc
