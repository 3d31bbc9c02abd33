"""Database leases: one leader per background job across every replica.

A lease is a row per job naming its holder and when the claim lapses. The holder renews it each
round; when a replica dies its lease lapses and another takes over within one lease period.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import String, or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from tabard.core.clock import Clock
from tabard.core.db import Base, Database, UTCDateTime, insert_if_absent
from tabard.core.ids import new_id


class JobLease(Base):
    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Lease:
    """Claims and renews the lease of one job for this process."""

    def __init__(self, database: Database, clock: Clock, name: str, ttl_seconds: float) -> None:
        self.database = database
        self.clock = clock
        self.name = name
        self.ttl = timedelta(seconds=ttl_seconds)
        self.holder = new_id()

    async def acquire(self) -> bool:
        """Take or renew the lease; True while this process is the job's leader."""
        now = self.clock.now()
        async with self.database.unit_of_work() as session:
            if await self._renew_or_steal(session, now):
                return True
            return await self._claim_new(session, now)

    async def release(self) -> None:
        """Give the lease up at once (clean shutdown), so another replica need not wait."""
        async with self.database.unit_of_work() as session:
            await session.execute(
                update(JobLease)
                .where(JobLease.name == self.name, JobLease.holder == self.holder)
                .values(expires_at=self.clock.now())
            )

    async def _renew_or_steal(self, session: AsyncSession, now: datetime) -> bool:
        statement = (
            update(JobLease)
            .where(
                JobLease.name == self.name,
                or_(JobLease.holder == self.holder, JobLease.expires_at <= now),
            )
            .values(holder=self.holder, expires_at=now + self.ttl)
        )
        result = await session.execute(statement)
        return bool(getattr(result, "rowcount", 0))

    async def _claim_new(self, session: AsyncSession, now: datetime) -> bool:
        return await insert_if_absent(
            session, JobLease, "name", name=self.name, holder=self.holder, expires_at=now + self.ttl
        )
