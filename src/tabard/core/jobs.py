"""Periodic background jobs, each run by one leader across replicas (see `core.leases`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from tabard.core.clock import Clock
from tabard.core.db import Database
from tabard.core.leases import Lease
from tabard.core.logging import get_logger

log = get_logger(__name__)


async def run_periodic(
    database: Database,
    clock: Clock,
    name: str,
    interval_seconds: float,
    job: Callable[[], Awaitable[object]],
    *,
    exclusive: bool = True,
) -> None:
    """Run `job` every `interval_seconds`; if `exclusive`, only while holding the job's lease.

    The lease outlives two intervals, so a leader that misses one round keeps its role, and a
    dead leader is replaced within two. A failing round is logged; the loop goes on.
    Non-exclusive jobs run in every process (observations that feed per-process metrics).
    """
    lease = Lease(database, clock, f"job:{name}", ttl_seconds=interval_seconds * 2 + 5)
    try:
        while True:
            try:
                if not exclusive or await lease.acquire():
                    await job()
            except Exception:  # one bad round must not stop the job for good
                log.exception("background job failed", job=name)
            await asyncio.sleep(interval_seconds)
    finally:
        if exclusive:
            with contextlib.suppress(Exception):
                await asyncio.shield(lease.release())
