"""The outbox relay: committed outbox rows onto the bus's durable stream, and into deliveries.

One relay at a time (a job lease) takes the unpublished rows oldest first and publishes each to
`tabard.<org>.<type>` (`tabard._platform.<type>` without an org) with the event id as the
stream's dedupe id. Then, in one transaction that holds the relay's state row, it marks them
published, numbers them (`published_seq`) in that order, and creates their webhook deliveries.
A crash between publishing and marking publishes the same rows again: the stream keeps one
copy, and consumers de-duplicate by event id anyway (at least once, never lost). Deliveries are
made in the marking transaction, not by a stream consumer, so they are made exactly once and
survive a restart of the in-process bus. Within an org, outbox rows are written in transactions
that also hold the org's audit chain head, so their order is the commit order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.bus import EventBus
from tabard.core.clock import Clock
from tabard.core.db import Database, insert_if_absent
from tabard.core.logging import get_logger
from tabard.core.metrics import EVENTS_RELAY_LAG
from tabard.core.outbox import OutboxEvent
from tabard.events import deliveries
from tabard.events.envelope import (
    STREAM_PREFIX,
    encode,
    envelope,
    published_subject,
    subject_of,
)
from tabard.events.models import RelayState

log = get_logger(__name__)

BATCH = 500
_PUBLISH_WINDOW = 64
_STATE_ROW = 1


async def relay_once(
    database: Database,
    bus: EventBus,
    clock: Clock,
    batch: int = BATCH,
    prefix: str = STREAM_PREFIX,
) -> int:
    """Publish one batch, then mark, number and fan it out; how many rows it published.

    No transaction is open while publishing (a slow bus must not hold SQLite's writer)."""
    async with database.read_only() as session:
        rows = await pending(session, batch)
    if not rows:
        EVENTS_RELAY_LAG.set(0)
        return 0
    EVENTS_RELAY_LAG.set(max(0.0, (clock.now() - rows[0].occurred_at).total_seconds()))
    await publish(bus, rows, prefix)  # a crash after this re-publishes: the stream dedupes
    last_seq = await mark_published(database, clock, [row.id for row in rows])
    try:
        await bus.publish(published_subject(prefix), str(last_seq).encode())
    except Exception:  # streams look again within a second anyway
        log.warning("events published but streams not told", last_seq=last_seq)
    return len(rows)


async def pending(session: AsyncSession, batch: int = BATCH) -> list[OutboxEvent]:
    statement = (
        select(OutboxEvent)
        .where(OutboxEvent.published_at.is_(None))
        .order_by(OutboxEvent.sequence)
        .limit(batch)
    )
    return list((await session.execute(statement)).scalars())


async def publish(bus: EventBus, rows: Sequence[OutboxEvent], prefix: str = STREAM_PREFIX) -> None:
    """Put the rows on the stream in order, `_PUBLISH_WINDOW` at a time: a window's publishes
    go out back to back and their acknowledgements are awaited together (one round trip per
    window, not per event). A failure raises; the round is retried from the first unmarked
    row, and the stream keeps one copy of each event already stored."""
    for start in range(0, len(rows), _PUBLISH_WINDOW):
        window = rows[start : start + _PUBLISH_WINDOW]
        await asyncio.gather(
            *(
                bus.stream_publish(
                    subject_of(row.org_id, row.type, prefix), encode(envelope(row)), msg_id=row.id
                )
                for row in window
            )
        )


async def mark_published(database: Database, clock: Clock, event_ids: Sequence[str]) -> int:
    """Number the published events in publish order and make their deliveries; rows another
    relay marked meanwhile keep their number (and were fanned out by it). Returns the last
    number given out."""
    async with database.unit_of_work() as session:
        state = await _lock_state(session)
        statement = select(OutboxEvent).where(
            OutboxEvent.id.in_(event_ids), OutboxEvent.published_at.is_(None)
        )
        found = {row.id: row for row in (await session.execute(statement)).scalars()}
        now = clock.now()
        marked = [found[event_id] for event_id in event_ids if event_id in found]
        for row in marked:
            state.last_published_seq += 1
            row.published_seq, row.published_at = state.last_published_seq, now
        await deliveries.fan_out(session, [envelope(row) for row in marked], now)
        return state.last_published_seq


async def _lock_state(session: AsyncSession) -> RelayState:
    await insert_if_absent(session, RelayState, "id", id=_STATE_ROW, last_published_seq=0)
    statement = select(RelayState).where(RelayState.id == _STATE_ROW).with_for_update()
    return (await session.execute(statement)).scalar_one()
