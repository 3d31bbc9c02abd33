"""Group commit: many requests' small writes in one transaction, each request still waiting for
its own write to be durable before it answers.

The hot write paths (an audit event per issued token) would otherwise pay one transaction, and
on SQLite one fsync, per request. Here a single writer task takes everything that queued while
the previous transaction was committing and hands it to `write_batch` in the next one, so
batches grow with load and stay at one item when idle: no timer, no added latency at low rates.
If a batch fails, its items are retried one by one, so one bad item fails only its own request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.db import Database

T = TypeVar("T")
BatchWriter = Callable[[AsyncSession, Sequence[T]], Awaitable[None]]
MAX_BATCH = 512


class GroupCommitter(Generic[T]):
    """Writes queued items in shared transactions; `submit` returns once its item is committed."""

    def __init__(
        self, database: Database, write_batch: BatchWriter[T], max_batch: int = MAX_BATCH
    ) -> None:
        self._database = database
        self._write_batch = write_batch
        self._max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[None]]] = []
        self._in_flight: list[asyncio.Future[None]] = []
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        """Queue `item` and wait until it is committed (or raise what writing it raised)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.append((item, future))
        if self._writer is None or self._writer.done():
            self._wakeup = asyncio.Event()
            self._writer = loop.create_task(self._run())
        assert self._wakeup is not None
        self._wakeup.set()
        await future

    async def close(self) -> None:
        """Finish what is queued, then stop the writer."""
        unsettled = [future for _, future in self._queue] + list(self._in_flight)
        await asyncio.gather(*unsettled, return_exceptions=True)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: len(batch)]
                self._in_flight = [future for _, future in batch]
                await self._commit(batch)
                self._in_flight = []

    async def _commit(self, batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        try:
            async with self._database.unit_of_work() as session:
                await self._write_batch(session, [item for item, _ in batch])
        except Exception as exc:
            if len(batch) > 1:
                for entry in batch:  # find the bad item: everyone else still gets committed
                    await self._commit([entry])
            elif not batch[0][1].done():
                batch[0][1].set_exception(exc)
            return
        for _, future in batch:
            if not future.done():
                future.set_result(None)
