"""First-boot work done once before the server starts."""

from __future__ import annotations

from tabard.core.clock import SystemClock
from tabard.core.config import Settings
from tabard.core.db import Database, create_engine
from tabard.tenancy.authentication import ensure_admin_secret


async def prepare_database(settings: Settings) -> str | None:
    """Make the admin credential match the configuration; returns a newly generated secret."""
    database = Database(create_engine(settings))
    configured = settings.admin_secret.get_secret_value() if settings.admin_secret else None
    try:
        async with database.unit_of_work() as session:
            return await ensure_admin_secret(
                session, configured, SystemClock(), production=settings.is_production
            )
    finally:
        await database.close()
