"""Scheduled signing-key rotation: one leader per deployment (an exclusive periodic job)."""

from __future__ import annotations

from tabard.core.clock import Clock
from tabard.core.config import Settings
from tabard.core.context import SYSTEM, Context
from tabard.core.db import Database
from tabard.core.keystore import KeyStore
from tabard.core.logging import get_logger
from tabard.signing import service
from tabard.signing.service import Rotation

log = get_logger(__name__)
KEY_ROTATION_JOB = "signing.scheduled_rotation"
# Rotation is measured in days; checking every few minutes keeps the lease cheap and the
# rotation within minutes of being due.
KEY_ROTATION_CHECK_INTERVAL_SECONDS = 300.0


async def rotate_if_due(
    database: Database, keystore: KeyStore, settings: Settings, clock: Clock
) -> Rotation | None:
    """Rotate when `service.rotation_due` says so (never revoking: the overlap keeps every live
    token valid), and erase private halves that can no longer be used. None if not due."""
    ctx = Context(actor=SYSTEM, clock=clock)
    async with database.unit_of_work() as session:
        reason = await service.rotation_due(session, settings, clock.now())
        rotation = (
            None if reason is None else await service.rotate(session, ctx, keystore, settings)
        )
        erased = await service.erase_spent_private_keys(session, clock.now())
    if rotation is not None:
        log.info(
            "signing key rotated",
            reason=reason,
            kid=rotation.key.kid,
            previous_kid=rotation.previous_kid,
        )
    if erased:
        log.info("spent signing keys erased", count=erased)
    return rotation
