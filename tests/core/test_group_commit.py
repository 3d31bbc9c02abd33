"""Group commit: concurrent writes share transactions, each caller waits for its own commit, and
one failing write fails only its own caller."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.group_commit import GroupCommitter, Write
from tabard.core.outbox import OutboxEvent, emit
from tabard.core.runtime import Runtime


def event_writer(runtime: Runtime, subject: str, transactions: list[int]) -> Write:
    async def write(session: AsyncSession) -> None:
        transactions.append(id(session))
        await emit(session, runtime.clock, type="test.event", org_id=None, subject=subject, data={})

    return write


async def stored_subjects(runtime: Runtime) -> list[str]:
    async with runtime.database.read_only() as session:
        rows = await session.execute(select(OutboxEvent.subject).order_by(OutboxEvent.sequence))
        return [row[0] for row in rows]


class TestGroupCommitter:
    async def test_concurrent_writes_share_transactions_and_all_commit(
        self, runtime: Runtime
    ) -> None:
        committer = GroupCommitter(runtime.database)
        sessions: list[int] = []
        writers = [event_writer(runtime, f"s{i}", sessions) for i in range(50)]
        await asyncio.gather(*(committer.write(w) for w in writers))
        assert sorted(await stored_subjects(runtime)) == sorted(f"s{i}" for i in range(50))
        assert len(set(sessions)) < 50  # batched: fewer transactions than writes
        await committer.close()

    async def test_a_failing_write_fails_only_its_caller(self, runtime: Runtime) -> None:
        committer = GroupCommitter(runtime.database)
        sessions: list[int] = []

        async def broken(session: AsyncSession) -> None:
            raise ValueError("this write is bad")

        good = [event_writer(runtime, f"ok{i}", sessions) for i in range(5)]
        results = await asyncio.gather(
            *(committer.write(w) for w in good),
            committer.write(broken),
            return_exceptions=True,
        )
        assert results[:5] == [None] * 5
        assert isinstance(results[5], ValueError)
        assert sorted(await stored_subjects(runtime)) == sorted(f"ok{i}" for i in range(5))
        await committer.close()

    async def test_a_write_returns_only_after_its_commit(self, runtime: Runtime) -> None:
        committer = GroupCommitter(runtime.database)
        await committer.write(event_writer(runtime, "durable", []))
        async with runtime.database.read_only() as session:
            count = await session.scalar(select(func.count()).select_from(OutboxEvent))
        assert count == 1
        await committer.close()

    async def test_close_waits_for_queued_writes(self, runtime: Runtime) -> None:
        committer = GroupCommitter(runtime.database)
        tasks = [
            asyncio.create_task(committer.write(event_writer(runtime, f"q{i}", [])))
            for i in range(10)
        ]
        await asyncio.sleep(0)
        await committer.close()
        assert all(task.done() and task.exception() is None for task in tasks)
        assert len(await stored_subjects(runtime)) == 10
