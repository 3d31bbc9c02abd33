"""Group commit: concurrent items share transactions, each caller waits for its own commit, and
one failing item fails only its own caller."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.group_commit import GroupCommitter
from tabard.core.outbox import OutboxEvent, emit
from tabard.core.runtime import Runtime

BAD = "bad"


class OutboxWriter:
    """Writes one outbox event per item and remembers the size of every batch it was given."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.batches: list[int] = []

    async def __call__(self, session: AsyncSession, subjects: Sequence[str]) -> None:
        self.batches.append(len(subjects))
        for subject in subjects:
            if subject == BAD:
                raise ValueError("this item cannot be written")
            await emit(
                session,
                self.runtime.clock,
                type="test.event",
                org_id=None,
                subject=subject,
                data={},
            )


async def stored_subjects(runtime: Runtime) -> list[str]:
    async with runtime.database.read_only() as session:
        rows = await session.execute(select(OutboxEvent.subject).order_by(OutboxEvent.sequence))
        return [row[0] for row in rows]


class TestGroupCommitter:
    async def test_concurrent_items_share_transactions_and_all_commit(
        self, runtime: Runtime
    ) -> None:
        writer = OutboxWriter(runtime)
        committer = GroupCommitter(runtime.database, writer)
        await asyncio.gather(*(committer.submit(f"s{i}") for i in range(50)))
        assert sorted(await stored_subjects(runtime)) == sorted(f"s{i}" for i in range(50))
        assert len(writer.batches) < 50  # batched: fewer transactions than items
        assert sum(writer.batches) == 50
        await committer.close()

    async def test_a_failing_item_fails_only_its_caller(self, runtime: Runtime) -> None:
        committer = GroupCommitter(runtime.database, OutboxWriter(runtime))
        results = await asyncio.gather(
            *(committer.submit(f"ok{i}") for i in range(5)),
            committer.submit(BAD),
            return_exceptions=True,
        )
        assert results[:5] == [None] * 5
        assert isinstance(results[5], ValueError)
        assert sorted(await stored_subjects(runtime)) == sorted(f"ok{i}" for i in range(5))
        await committer.close()

    async def test_an_item_returns_only_after_its_commit(self, runtime: Runtime) -> None:
        committer = GroupCommitter(runtime.database, OutboxWriter(runtime))
        await committer.submit("durable")
        async with runtime.database.read_only() as session:
            count = await session.scalar(select(func.count()).select_from(OutboxEvent))
        assert count == 1
        await committer.close()

    async def test_close_waits_for_queued_items(self, runtime: Runtime) -> None:
        committer = GroupCommitter(runtime.database, OutboxWriter(runtime))
        tasks = [asyncio.create_task(committer.submit(f"q{i}")) for i in range(10)]
        await asyncio.sleep(0)
        await committer.close()
        assert all(task.done() and task.exception() is None for task in tasks)
        assert len(await stored_subjects(runtime)) == 10
