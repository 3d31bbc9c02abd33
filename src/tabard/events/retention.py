"""Forgetting old events: published outbox rows (what streams resume from) and finished webhook
deliveries (with their attempts, by cascade) after `event_retention_days`. Pending deliveries
are kept however old; a dead letter is kept as long as a delivered one, then dropped."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Select, and_, delete, or_, select

from tabard.core.clock import Clock
from tabard.core.db import Database
from tabard.core.outbox import OutboxEvent
from tabard.events.models import WebhookDelivery
from tabard.events.schemas import DeliveryStatus

_BATCH = 1000  # rows per transaction, so a big backlog never holds the writer for long


async def sweep(database: Database, clock: Clock, retention_days: int) -> int:
    """Delete what is past retention, batch by batch; how many rows went."""
    cutoff = clock.now() - timedelta(days=retention_days)
    finished = select(WebhookDelivery.id).where(
        or_(
            and_(
                WebhookDelivery.status == DeliveryStatus.SUCCEEDED.value,
                WebhookDelivery.delivered_at < cutoff,
            ),
            and_(
                WebhookDelivery.status == DeliveryStatus.DEAD.value,
                WebhookDelivery.dead_at < cutoff,
            ),
        )
    )
    published = select(OutboxEvent.sequence).where(
        OutboxEvent.published_at.is_not(None), OutboxEvent.published_at < cutoff
    )
    total = 0
    while batch := await _delete_deliveries(database, finished.limit(_BATCH)):
        total += batch
    while batch := await _delete_events(database, published.limit(_BATCH)):
        total += batch
    return total


async def _delete_deliveries(database: Database, ids: Select[str]) -> int:
    async with database.unit_of_work() as session:
        found = list((await session.execute(ids)).scalars())
        if found:  # their attempts go with them (ON DELETE CASCADE)
            await session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(found)))
        return len(found)


async def _delete_events(database: Database, sequences: Select[int]) -> int:
    async with database.unit_of_work() as session:
        found = list((await session.execute(sequences)).scalars())
        if found:
            await session.execute(delete(OutboxEvent).where(OutboxEvent.sequence.in_(found)))
        return len(found)
