"""The transactional outbox: domain events written in the same transaction as the change.

A relay (events domain) publishes committed rows to the bus and numbers them in the order it
published them (`published_seq`); nothing on the request path waits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from tabard.core.clock import Clock
from tabard.core.db import Base, UTCDateTime
from tabard.core.ids import new_id

WROTE_EVENTS = "tabard.outbox.wrote_events"


class OutboxEvent(Base):
    __tablename__ = "outbox_events"

    sequence: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(100))
    org_id: Mapped[str | None] = mapped_column(String(63))
    subject: Mapped[str | None] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The order the relay published in (gapless, one relay at a time): what streams resume by.
    published_seq: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), unique=True
    )

    __table_args__ = (
        Index("ix_outbox_events_unpublished", "published_at", "sequence"),
        Index("ix_outbox_events_org_id_published_seq", "org_id", "published_seq"),
    )


async def emit(
    session: AsyncSession,
    clock: Clock,
    *,
    type: str,
    org_id: str | None,
    subject: str | None,
    data: dict[str, Any],
) -> str:
    """Add an event to the outbox of the current transaction; returns its id."""
    event = OutboxEvent(
        id=new_id(), type=type, org_id=org_id, subject=subject, data=data, occurred_at=clock.now()
    )
    session.add(event)
    session.info[WROTE_EVENTS] = True
    return event.id


def wrote_events(session: AsyncSession) -> bool:
    """Whether this (committed) session added outbox events."""
    return bool(session.info.get(WROTE_EVENTS))
