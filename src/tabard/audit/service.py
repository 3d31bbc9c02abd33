"""Writing, reading and verifying the audit log.

`record` runs inside the caller's unit of work, so the state change and its audit event commit
together. Denials happen on paths that roll back, so `record_denial` writes in a transaction of
its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, Table, func, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit.chain import (
    GENESIS_HASH,
    HASHED_FIELDS,
    ChainVerifier,
    VerifyResult,
    chain_for,
    event_hash,
    format_time,
)
from tabard.audit.errors import AuditEventNotFound
from tabard.audit.models import AuditChainHead, AuditEvent
from tabard.audit.redaction import redact
from tabard.audit.schemas import Outcome
from tabard.core.bulk import BulkInsert
from tabard.core.context import Context
from tabard.core.db import Database, insert_if_absent
from tabard.core.ids import new_id
from tabard.core.pagination import DEFAULT_LIMIT, decode_cursor, page_of

_EXPORT_BATCH = 500
_EVENT_ROWS = BulkInsert(
    cast(Table, AuditEvent.__table__),  # a mapped class's table is a Table
    (*HASHED_FIELDS, "prev_hash", "hash"),
)


async def record(
    session: AsyncSession,
    ctx: Context,
    *,
    action: str,
    org_id: str | None,
    outcome: Outcome = Outcome.SUCCESS,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to its org's chain within the current transaction."""
    chain_id = chain_for(org_id)
    head = await _lock_head(session, chain_id)
    event = AuditEvent(
        id=new_id(),
        chain_id=chain_id,
        chain_seq=head.last_seq + 1,
        occurred_at=ctx.clock.now(),
        org_id=org_id,
        actor_kind=ctx.actor.kind.value,
        actor_id=ctx.actor.id,
        action=action,
        outcome=outcome.value,
        target=target,
        request_id=ctx.request_id,
        details=redact(details or {}),
        prev_hash=head.last_hash,
    )
    event.hash = event_hash(head.last_hash, hashed_content(event))
    head.last_seq, head.last_hash = event.chain_seq, event.hash
    session.add(event)
    await session.flush()
    return event


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One event for `record_batch`: what `record` takes, gathered for a group commit."""

    ctx: Context
    action: str
    org_id: str | None
    outcome: Outcome = Outcome.SUCCESS
    target: str | None = None
    details: dict[str, Any] | None = None


async def record_batch(session: AsyncSession, entries: Sequence[AuditEntry]) -> None:
    """Append many events in the current transaction: each chain head is locked once, the
    hashes are chained in memory, and the rows go in one multi-row INSERT. The resulting chain
    is exactly what `record` would have written one event at a time."""
    by_chain: dict[str, list[AuditEntry]] = {}
    for entry in entries:
        by_chain.setdefault(chain_for(entry.org_id), []).append(entry)
    rows: list[dict[str, Any]] = []
    for chain_id, chained in sorted(by_chain.items()):  # a fixed lock order: no deadlocks
        head = await _lock_head(session, chain_id)
        for entry in chained:
            row = _event_row(entry, chain_id, head.last_seq + 1, head.last_hash)
            head.last_seq, head.last_hash = row["chain_seq"], row["hash"]
            rows.append(row)
    # One statement for the batch, past the bulk-ORM layer, which cost more per row than the
    # database did (a restart storm audits thousands of heartbeats a flush); see core.bulk.
    await _EVENT_ROWS.run(session, rows)


def _event_row(entry: AuditEntry, chain_id: str, seq: int, prev_hash: str) -> dict[str, Any]:
    ctx = entry.ctx
    row: dict[str, Any] = {
        "id": new_id(),
        "chain_id": chain_id,
        "chain_seq": seq,
        "occurred_at": ctx.clock.now(),
        "org_id": entry.org_id,
        "actor_kind": ctx.actor.kind.value,
        "actor_id": ctx.actor.id,
        "action": entry.action,
        "outcome": entry.outcome.value,
        "target": entry.target,
        "request_id": ctx.request_id,
        "details": redact(entry.details or {}),
        "prev_hash": prev_hash,
    }
    content = {**row, "occurred_at": format_time(row["occurred_at"])}
    row["hash"] = event_hash(prev_hash, content)
    return row


async def record_denial(
    database: Database,
    ctx: Context,
    *,
    action: str,
    org_id: str | None,
    reason: str,
    target: str | None = None,
) -> None:
    """Audit a refused request in its own transaction (the request's own work rolls back)."""
    async with database.unit_of_work() as session:
        await record(
            session,
            ctx,
            action=action,
            org_id=org_id,
            outcome=Outcome.DENIED,
            target=target,
            details={"reason": reason},
        )


async def latest_sequence(session: AsyncSession, actions: Sequence[str]) -> int:
    """The global sequence of the newest event with one of `actions` (0 when there is none):
    a number that only grows, since events are never removed."""
    statement = select(func.max(AuditEvent.sequence)).where(AuditEvent.action.in_(actions))
    return int((await session.execute(statement)).scalar_one() or 0)


async def _lock_head(session: AsyncSession, chain_id: str) -> AuditChainHead:
    await insert_if_absent(
        session, AuditChainHead, "chain_id", chain_id=chain_id, last_seq=0, last_hash=GENESIS_HASH
    )
    statement = (
        select(AuditChainHead)
        .where(AuditChainHead.chain_id == chain_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(statement)).scalar_one()


def hashed_content(event: AuditEvent) -> dict[str, Any]:
    """The fields of `event` that the chain hash covers, in their canonical textual form."""
    return {
        "id": event.id,
        "chain_id": event.chain_id,
        "chain_seq": event.chain_seq,
        "occurred_at": format_time(event.occurred_at),
        "org_id": event.org_id,
        "actor_kind": event.actor_kind,
        "actor_id": event.actor_id,
        "action": event.action,
        "outcome": event.outcome,
        "target": event.target,
        "request_id": event.request_id,
        "details": event.details,
    }


def exported(event: AuditEvent) -> dict[str, Any]:
    """The NDJSON export form: hashed content plus the chain links and global sequence."""
    return {
        **hashed_content(event),
        "sequence": event.sequence,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


@dataclass(frozen=True, slots=True)
class AuditFilter:
    org_id: str | None = None
    actor_id: str | None = None
    action: str | None = None
    outcome: Outcome | None = None
    since: datetime | None = None
    until: datetime | None = None


def _filtered(query: AuditFilter) -> Select[AuditEvent]:
    statement = select(AuditEvent)
    if query.org_id is not None:
        statement = statement.where(AuditEvent.org_id == query.org_id)
    if query.actor_id is not None:
        statement = statement.where(AuditEvent.actor_id == query.actor_id)
    if query.action is not None:
        statement = statement.where(AuditEvent.action == query.action)
    if query.outcome is not None:
        statement = statement.where(AuditEvent.outcome == query.outcome.value)
    if query.since is not None:
        statement = statement.where(AuditEvent.occurred_at >= query.since)
    if query.until is not None:
        statement = statement.where(AuditEvent.occurred_at < query.until)
    return statement


async def list_events(
    session: AsyncSession, query: AuditFilter, *, cursor: str | None, limit: int = DEFAULT_LIMIT
) -> tuple[list[AuditEvent], str | None]:
    """A page of events, newest first."""
    statement = _filtered(query).order_by(AuditEvent.sequence.desc()).limit(limit + 1)
    after = decode_cursor(cursor)
    if after is not None:
        statement = statement.where(AuditEvent.sequence < int(after))
    rows = list((await session.execute(statement)).scalars())
    return page_of(rows, limit, key=lambda event: event.sequence)


async def get_event(session: AsyncSession, event_id: str, *, org_id: str | None) -> AuditEvent:
    """One event; confined to `org_id` unless it is None (platform admin)."""
    statement = select(AuditEvent).where(AuditEvent.id == event_id)
    if org_id is not None:
        statement = statement.where(AuditEvent.org_id == org_id)
    event = (await session.execute(statement)).scalar_one_or_none()
    if event is None:
        raise AuditEventNotFound(f"no audit event {event_id!r}")
    return event


async def export(
    database: Database, query: AuditFilter, *, batch_size: int = _EXPORT_BATCH
) -> AsyncIterator[dict[str, Any]]:
    """Every matching event, chain by chain in chain order, read in batches.

    Chain order, not global sequence: on PostgreSQL a lower sequence number of another chain may
    commit after a higher one was read, and paging by sequence would skip it.
    """
    position = tuple_(AuditEvent.chain_id, AuditEvent.chain_seq)
    after: tuple[str, int] | None = None
    while True:
        statement = _filtered(query).order_by(AuditEvent.chain_id, AuditEvent.chain_seq)
        if after is not None:
            statement = statement.where(position > tuple_(literal(after[0]), literal(after[1])))
        async with database.read_only() as session:
            batch = list((await session.execute(statement.limit(batch_size))).scalars())
        for event in batch:
            yield exported(event)
        if len(batch) < batch_size:
            return
        after = (batch[-1].chain_id, batch[-1].chain_seq)


async def verify(database: Database) -> VerifyResult:
    """Walk every chain (streaming), then compare each chain's end with its stored head.

    Heads are read first: events committed meanwhile only extend chains past them.
    """
    async with database.read_only() as session:
        heads = (await session.execute(select(AuditChainHead))).scalars().all()
    verifier = ChainVerifier()
    last_ids: dict[str, str] = {}
    async for event in export(database, AuditFilter()):
        if not verifier.feed(event):
            return verifier.result()
        last_ids[event["chain_id"]] = event["id"]
    for head in heads:
        seen_seq, seen_hash = verifier.heads.get(head.chain_id, (0, GENESIS_HASH))
        if seen_seq < head.last_seq or (seen_seq == head.last_seq and seen_hash != head.last_hash):
            # The chain ends before its recorded head: its tail was deleted.
            broken = last_ids.get(head.chain_id, head.chain_id)
            return VerifyResult(False, verifier.checked, broken)
    return verifier.result()
