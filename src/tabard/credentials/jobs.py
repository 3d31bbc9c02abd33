"""Background work of the credentials domain: the expiring-soon gauge."""

from __future__ import annotations

from tabard.core.clock import Clock
from tabard.core.db import Database
from tabard.core.metrics import CREDENTIALS_EXPIRING_SOON
from tabard.credentials import service

EXPIRY_GAUGE_JOB = "credentials.expiring_soon_gauge"


async def update_expiring_gauge_once(database: Database, clock: Clock) -> int:
    """Count active credentials expiring within 7 days into `tabard_credentials_expiring_soon`."""
    async with database.read_only() as session:
        count = await service.count_expiring_soon(session, clock.now())
    CREDENTIALS_EXPIRING_SOON.labels("client_credential").set(count)
    return count
