"""Background work of the PKI: the expiring-soon gauge and the `certificate.expiring` events."""

from __future__ import annotations

from tabard.core.clock import Clock
from tabard.core.context import SYSTEM, Context
from tabard.core.db import Database
from tabard.core.metrics import CREDENTIALS_EXPIRING_SOON
from tabard.pki import certificates

EXPIRY_GAUGE_JOB = "pki.expiring_soon_gauge"
EXPIRY_EVENTS_JOB = "pki.expiring_events"


async def update_expiring_gauge_once(database: Database, clock: Clock) -> int:
    """Count active certificates expiring within 7 days into `tabard_credentials_expiring_soon`."""
    async with database.read_only() as session:
        count = await certificates.count_expiring_soon(session, clock.now())
    CREDENTIALS_EXPIRING_SOON.labels("certificate").set(count)
    return count


async def announce_expiring_once(database: Database, clock: Clock) -> int:
    """Raise `certificate.expiring` once for each certificate entering its last 7 days."""
    async with database.unit_of_work() as session:
        return await certificates.announce_expiring(session, Context(SYSTEM, clock), clock)
