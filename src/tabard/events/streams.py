"""Event streams: an org's (or, for the admin, every) published event, in publish order, as
Server-Sent Events, resumable from any event id (`Last-Event-ID`).

Events are read from the outbox by `published_seq`, the gapless number the relay gives in the
order it published: a stream never skips an event and never shows one twice. While caught up,
the stream waits for the relay's word on the bus that it numbered more events (on any replica)
and looks again at least every second anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVarTuple

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.bus import EventBus
from tabard.core.db import Database
from tabard.core.outbox import OutboxEvent
from tabard.events import catalogue
from tabard.events.envelope import STREAM_PREFIX, envelope, published_subject
from tabard.events.errors import InvalidLastEventId

Ts = TypeVarTuple("Ts")
POLL_SECONDS = 1.0
_PAGE = 200


@dataclass(frozen=True)
class StreamRequest:
    """Whose events (None: every org's and the platform's), which types, from where."""

    org_id: str | None
    patterns: list[str]
    after_seq: int
    follow: bool


async def start_after(
    session: AsyncSession,
    org_id: str | None,
    patterns: list[str],
    event_id: str | None,
    last: int = 0,
) -> tuple[int, str | None]:
    """The published_seq to resume after: that of `event_id`; else just before the `last`
    matching events (0: the current end, so a new stream shows what happens from now on).
    With it, when the stream starts at the end, the id of the newest matching event: the
    stream announces it, so a client that reconnects before any event resumes from there.
    An unknown event id, or another org's, is a 400."""
    if event_id is not None:
        statement = select(OutboxEvent.published_seq, OutboxEvent.org_id).where(
            OutboxEvent.id == event_id
        )
        row = (await session.execute(statement)).one_or_none()
        if row is None or row.published_seq is None or (org_id not in (None, row.org_id)):
            raise InvalidLastEventId(f"no published event {event_id!r} to resume after")
        return int(row.published_seq), None
    newest = _scoped(select(OutboxEvent.published_seq, OutboxEvent.id), org_id, patterns)
    newest = newest.order_by(OutboxEvent.published_seq.desc())
    if last == 0:
        end = (await session.execute(newest.limit(1))).one_or_none()
        return (int(end.published_seq), end.id) if end is not None else (0, None)
    oldest_shown = (await session.execute(newest.offset(last - 1).limit(1))).one_or_none()
    return (int(oldest_shown.published_seq) - 1 if oldest_shown is not None else 0), None


async def events(
    database: Database, bus: EventBus, request: StreamRequest, prefix: str = STREAM_PREFIX
) -> AsyncIterator[dict[str, object]]:
    """The events after `request.after_seq`; with `follow`, forever (the caller stops it)."""
    after = request.after_seq
    async with bus.subscribe(published_subject(prefix)) as published:
        woken = asyncio.Event()
        watcher = asyncio.create_task(_watch(published, woken))
        try:
            while True:
                async with database.read_only() as session:
                    rows = await _page(session, request, after)
                for row in rows:
                    after = int(row.published_seq or after)
                    yield envelope(row)
                if len(rows) == _PAGE:
                    continue
                if not request.follow:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), timeout=POLL_SECONDS)
                woken.clear()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def _page(session: AsyncSession, request: StreamRequest, after: int) -> list[OutboxEvent]:
    statement = _scoped(select(OutboxEvent), request.org_id, request.patterns)
    statement = statement.where(OutboxEvent.published_seq > after)
    statement = statement.order_by(OutboxEvent.published_seq).limit(_PAGE)
    return list((await session.execute(statement)).scalars())


def _scoped(statement: Select[*Ts], org_id: str | None, patterns: list[str]) -> Select[*Ts]:
    """Published events of `org_id` (None: all) whose types match `patterns`."""
    statement = statement.where(
        OutboxEvent.published_seq.is_not(None),
        catalogue.type_filter(patterns, OutboxEvent.type),
    )
    return statement if org_id is None else statement.where(OutboxEvent.org_id == org_id)


async def _watch(published: AsyncIterator[object], woken: asyncio.Event) -> None:
    """Set `woken` whenever the bus says something was published."""
    async for _ in published:
        woken.set()
