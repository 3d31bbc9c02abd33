"""Heartbeats: the hottest write path of a fleet, absorbed in memory and written in batches.

A heartbeat only updates the process's `HeartbeatBuffer` (no I/O): the latest beat of each
instance since the last flush, coalesced. A background task per process flushes the buffer
every `TABARD_HEARTBEAT_FLUSH_SECONDS` as one multi-row upsert of `agent_instances`, with the
sampled audit events in the same transaction: at most one per instance per 5 minutes, and
always the first one this process sees after it started. So 100,000 instances beating every
30 s cost one statement of ~3,300 rows a second, not 3,300 statements.

Reads merge the database with what this process has not flushed yet; another replica's
unflushed beats are at most one flush interval late, far below the offline threshold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Insert, Table, case, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit import service as audit
from tabard.core.bulk import BulkInsert
from tabard.core.clock import Clock
from tabard.core.context import Actor, ActorKind, Context
from tabard.core.db import Database
from tabard.core.errors import InvalidField
from tabard.core.logging import get_logger
from tabard.core.metrics import (
    HEARTBEAT_BUFFER,
    HEARTBEAT_FLUSH,
    HEARTBEAT_FLUSH_ROWS,
    HEARTBEATS_AUDITED,
    HEARTBEATS_RECEIVED,
)
from tabard.operations.models import AgentInstance
from tabard.operations.schemas import MAX_STATUS_BYTES, Heartbeat, HeartbeatAck

log = get_logger(__name__)

AUDIT_EVERY = timedelta(minutes=5)
CLOCK_SKEW_TOLERANCE_SECONDS = 30.0
_MAX_AUDIT_MEMORY = 500_000
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # built once, not per beat as json.dumps would


@dataclass(slots=True)
class Beat:
    """The latest heartbeat of one instance since the last flush, and how many it stands for."""

    org_id: str
    agent_id: str
    instance_id: str
    hostname: str
    version: str
    sdk_version: str
    status: dict[str, Any]
    clock_skew_seconds: float
    seen_at: datetime
    count: int
    audited: bool


def clock_skew(now: datetime, agent_clock: datetime | None) -> float:
    """Server time minus the agent's: positive when the agent's clock is behind."""
    return 0.0 if agent_clock is None else (now - agent_clock).total_seconds()


def check_status_size(heartbeat: Heartbeat) -> None:
    size = len(_COMPACT.encode(heartbeat.status).encode())
    if size > MAX_STATUS_BYTES:
        raise InvalidField("body.status", f"{size} bytes; at most {MAX_STATUS_BYTES}")


def check_storable(heartbeat: Heartbeat) -> None:
    """Refuse what the flush could not write: a beat PostgreSQL rejects would fail every flush
    of the process (the batch is put back), and a naive clock cannot be compared with ours."""
    for field in ("hostname", "version", "sdk_version"):
        if "\x00" in getattr(heartbeat, field):
            raise InvalidField(f"body.{field}", "must not contain NUL characters")
    if heartbeat.clock is not None and heartbeat.clock.utcoffset() is None:
        raise InvalidField("body.clock", "needs a time zone (an offset or Z)")


class HeartbeatBuffer:
    """One per process; `record` is synchronous and does no I/O."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._pending: dict[tuple[str, str], Beat] = {}
        # Taken by a flush that has not committed yet: still shown to reads meanwhile.
        self._flushing: dict[tuple[str, str], Beat] = {}
        self._last_audit: dict[tuple[str, str], datetime] = {}

    def record(self, org_id: str, agent_id: str, heartbeat: Heartbeat) -> HeartbeatAck:
        check_status_size(heartbeat)
        check_storable(heartbeat)
        now = self._clock.now()
        key = (agent_id, heartbeat.instance_id)
        skew = clock_skew(now, heartbeat.clock)
        earlier = self._pending.get(key)
        beat = Beat(
            org_id,
            agent_id,
            heartbeat.instance_id,
            heartbeat.hostname,
            heartbeat.version,
            heartbeat.sdk_version,
            heartbeat.status,
            skew,
            now,
            (earlier.count if earlier else 0) + 1,
            (earlier.audited if earlier else False) or self._due_for_audit(key, now),
        )
        self._pending[key] = beat
        HEARTBEATS_RECEIVED.inc()
        # Both values are ours and of the declared types: nothing to validate.
        return HeartbeatAck.model_construct(server_time=now, clock_skew_seconds=skew)

    def pending_for(self, agent_id: str) -> list[Beat]:
        """This process's beats of the agent not yet committed (reads merge them in)."""
        beats = {**self._flushing, **self._pending}
        return [beat for (agent, _), beat in beats.items() if agent == agent_id]

    def _due_for_audit(self, key: tuple[str, str], now: datetime) -> bool:
        last = self._last_audit.get(key)
        if last is not None and now - last < AUDIT_EVERY:
            return False
        if len(self._last_audit) > _MAX_AUDIT_MEMORY:
            self._last_audit.clear()  # bounded memory; at worst some extra audit events
        self._last_audit[key] = now
        return True

    def take(self) -> list[Beat]:
        """The beats to write; they stay visible to reads until `flushed` or `put_back`."""
        self._flushing, self._pending = self._pending, {}
        return list(self._flushing.values())

    def flushed(self) -> None:
        self._flushing = {}

    def put_back(self, beats: Sequence[Beat]) -> None:
        """A failed flush: keep the beats for the next round. A newer beat of the same instance
        that arrived meanwhile wins, and carries the older one's count and audit sample."""
        self._flushing = {}
        for beat in beats:
            key = (beat.agent_id, beat.instance_id)
            newer = self._pending.get(key)
            if newer is None:
                self._pending[key] = beat
            else:
                newer.count += beat.count
                newer.audited = newer.audited or beat.audited

    def __len__(self) -> int:
        return len(self._pending)


async def flush(database: Database, buffer: HeartbeatBuffer, clock: Clock) -> int:
    """Write the buffered beats (and their sampled audit events) in one transaction."""
    beats = buffer.take()
    HEARTBEAT_BUFFER.set(len(buffer))
    if not beats:
        return 0
    started = time.perf_counter()
    try:
        async with database.unit_of_work() as session:
            audited = await _write(session, beats, clock)
        HEARTBEATS_AUDITED.inc(audited)
    except (IntegrityError, DataError):
        # A row the database refuses (an agent deleted since it beat, a value it cannot store)
        # must not hold the others back: write them one by one, dropping only that one.
        await _write_each(database, beats, clock)
    except Exception:  # the database is away: keep everything for the next round
        buffer.put_back(beats)
        raise
    buffer.flushed()
    HEARTBEAT_FLUSH.observe(time.perf_counter() - started)
    HEARTBEAT_FLUSH_ROWS.observe(len(beats))
    return len(beats)


async def _write_each(database: Database, beats: Sequence[Beat], clock: Clock) -> None:
    for beat in beats:
        try:
            async with database.unit_of_work() as session:
                audited = await _write(session, [beat], clock)
            HEARTBEATS_AUDITED.inc(audited)
        except (IntegrityError, DataError) as exc:
            log.info("heartbeat dropped", agent_id=beat.agent_id, error=type(exc).__name__)


async def _write(session: AsyncSession, beats: Sequence[Beat], clock: Clock) -> int:
    """Upsert the instances and record their sampled audit events; how many were audited."""
    await _upsert(session, beats)
    entries = [_audit_entry(beat, clock) for beat in beats if beat.audited]
    if entries:
        await audit.record_batch(session, entries)
    return len(entries)


async def _upsert(session: AsyncSession, beats: Sequence[Beat]) -> None:
    # One statement for the whole batch, compiled once (see core.bulk).
    await _INSTANCE_ROWS.run(
        session,
        [
            {
                "agent_id": beat.agent_id,
                "instance_id": beat.instance_id,
                "org_id": beat.org_id,
                "hostname": beat.hostname,
                "version": beat.version,
                "sdk_version": beat.sdk_version,
                "status_data": beat.status,
                "clock_skew_seconds": beat.clock_skew_seconds,
                "first_seen_at": beat.seen_at,
                "last_seen_at": beat.seen_at,
                "heartbeats": beat.count,
            }
            for beat in beats
        ],
    )


def _newest_wins(statement: sqlite.Insert | postgresql.Insert) -> Insert:
    """… ON CONFLICT DO UPDATE: a beat seen again adds its count and, if newer, its fields."""
    table = _INSTANCES
    dialect = "sqlite" if isinstance(statement, sqlite.Insert) else "postgresql"
    excluded = statement.excluded
    # Beats from two replicas may flush out of order: the newest wins, for every field it
    # carries (SET reads the row as it was, so this holds beside the new last_seen_at).
    newer = excluded.last_seen_at >= table.c.last_seen_at
    latest = {
        name: case((newer, excluded[name]), else_=table.c[name])
        for name in ("hostname", "version", "sdk_version", "status_data", "clock_skew_seconds")
    }
    latest_seen = func.max if dialect == "sqlite" else func.greatest
    return statement.on_conflict_do_update(
        index_elements=["agent_id", "instance_id"],
        set_={
            **latest,
            "last_seen_at": latest_seen(table.c.last_seen_at, excluded.last_seen_at),
            "heartbeats": table.c.heartbeats + excluded.heartbeats,
        },
    )


_INSTANCES = cast(Table, AgentInstance.__table__)  # a mapped class's table is a Table
# Every column of the table: a flush writes whole rows.
_INSTANCE_ROWS = BulkInsert(_INSTANCES, tuple(_INSTANCES.c.keys()), _newest_wins)


def _audit_entry(beat: Beat, clock: Clock) -> audit.AuditEntry:
    ctx = Context(Actor(ActorKind.AGENT, beat.agent_id, beat.org_id), clock)
    details = {
        "instance_id": beat.instance_id,
        "hostname": beat.hostname,
        "version": beat.version,
        "sdk_version": beat.sdk_version,
        "clock_skew_seconds": round(beat.clock_skew_seconds, 3),
        "heartbeats": beat.count,
    }
    return audit.AuditEntry(
        ctx, "agent.heartbeat", beat.org_id, target=beat.agent_id, details=details
    )
