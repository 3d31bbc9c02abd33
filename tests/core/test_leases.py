"""Database leases: exactly one leader per job, handed over when the leader goes away."""

from __future__ import annotations

import asyncio
import contextlib

from tabard.core.clock import FrozenClock
from tabard.core.jobs import run_periodic
from tabard.core.leases import Lease
from tabard.core.runtime import Runtime


class TestLease:
    async def test_only_one_of_many_replicas_leads(
        self, runtime: Runtime, clock: FrozenClock
    ) -> None:
        replicas = [Lease(runtime.database, clock, "job:x", ttl_seconds=30) for _ in range(5)]
        results = await asyncio.gather(*(lease.acquire() for lease in replicas))
        assert results.count(True) == 1

    async def test_leader_renews_and_others_wait(
        self, runtime: Runtime, clock: FrozenClock
    ) -> None:
        leader = Lease(runtime.database, clock, "job:x", ttl_seconds=30)
        other = Lease(runtime.database, clock, "job:x", ttl_seconds=30)
        assert await leader.acquire()
        clock.advance(20)
        assert await leader.acquire()  # renewed: good for 30 s from now
        clock.advance(20)
        assert not await other.acquire()

    async def test_lapsed_lease_is_taken_over(self, runtime: Runtime, clock: FrozenClock) -> None:
        leader = Lease(runtime.database, clock, "job:x", ttl_seconds=30)
        other = Lease(runtime.database, clock, "job:x", ttl_seconds=30)
        assert await leader.acquire()
        clock.advance(31)
        assert await other.acquire()
        assert not await leader.acquire()

    async def test_release_hands_over_at_once(self, runtime: Runtime, clock: FrozenClock) -> None:
        leader = Lease(runtime.database, clock, "job:x", ttl_seconds=30)
        other = Lease(runtime.database, clock, "job:x", ttl_seconds=30)
        assert await leader.acquire()
        await leader.release()
        assert await other.acquire()

    async def test_jobs_have_separate_leases(self, runtime: Runtime, clock: FrozenClock) -> None:
        first = Lease(runtime.database, clock, "job:a", ttl_seconds=30)
        second = Lease(runtime.database, clock, "job:b", ttl_seconds=30)
        assert await first.acquire()
        assert await second.acquire()


class TestRunPeriodic:
    async def test_one_replica_runs_the_job_and_another_takes_over(
        self, runtime: Runtime, clock: FrozenClock
    ) -> None:
        runs = {"a": 0, "b": 0}
        ran = {"a": asyncio.Event(), "b": asyncio.Event()}

        def start(replica: str) -> asyncio.Task[None]:
            async def job() -> None:
                runs[replica] += 1
                ran[replica].set()

            return asyncio.create_task(run_periodic(runtime.database, clock, "sweep", 0.02, job))

        first = start("a")
        async with asyncio.timeout(10):
            await ran["a"].wait()
        second = start("b")
        await asyncio.sleep(0.2)
        assert runs["a"] >= 3  # the leader keeps running it
        assert runs["b"] == 0  # the lease is held: the second replica stands by
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        async with asyncio.timeout(10):
            await ran["b"].wait()  # released on shutdown: taken over at once
        second.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await second

    async def test_non_exclusive_job_runs_in_every_replica(
        self, runtime: Runtime, clock: FrozenClock
    ) -> None:
        ran = [asyncio.Event(), asyncio.Event()]

        def start(index: int) -> asyncio.Task[None]:
            async def job() -> None:
                ran[index].set()

            return asyncio.create_task(
                run_periodic(runtime.database, clock, "observe", 0.02, job, exclusive=False)
            )

        tasks = [start(0), start(1)]
        async with asyncio.timeout(10):
            await asyncio.gather(ran[0].wait(), ran[1].wait())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
