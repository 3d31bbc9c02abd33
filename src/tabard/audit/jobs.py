"""Background check of the audit chain; feeds the `tabard_audit_chain_intact` gauge."""

from __future__ import annotations

import asyncio

from tabard.audit import service
from tabard.core import metrics
from tabard.core.db import Database
from tabard.core.logging import get_logger

log = get_logger(__name__)


async def check_chain_once(database: Database) -> bool:
    result = await service.verify(database)
    metrics.AUDIT_CHAIN_INTACT.set(1 if result.verified else 0)
    metrics.AUDIT_EVENTS_CHECKED.set(result.checked)
    if not result.verified:
        log.error("audit chain broken", first_broken_id=result.first_broken_id)
    return result.verified


async def run_chain_checker(database: Database, interval_seconds: float) -> None:
    """Verify the chain every `interval_seconds` until cancelled."""
    while True:
        try:
            await check_chain_once(database)
        except Exception:  # a failed check is logged and retried; it must not kill the server
            log.exception("audit chain check failed")
        await asyncio.sleep(interval_seconds)
