"""Background check of the audit chain; feeds the `tabard_audit_chain_intact` gauge."""

from __future__ import annotations

from tabard.audit import service
from tabard.core import metrics
from tabard.core.db import Database
from tabard.core.logging import get_logger

log = get_logger(__name__)
CHAIN_CHECK_JOB = "audit-chain-check"


async def check_chain_once(database: Database) -> bool:
    """Verify every chain once and publish the outcome as the chain-intact gauge."""
    result = await service.verify(database)
    metrics.AUDIT_CHAIN_INTACT.set(1 if result.verified else 0)
    metrics.AUDIT_EVENTS_CHECKED.set(result.checked)
    if not result.verified:
        log.error("audit chain broken", first_broken_id=result.first_broken_id)
    return result.verified
