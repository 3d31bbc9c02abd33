"""One load at a time per key: concurrent callers share the call already in flight.

A per-process cache entry that expires under load (an org's token policy, the signing keys, the
revocation list's catch-up) used to send every request that found it missing to the database at
once; each read queued behind the others and behind the heartbeat flush, so the cache stayed
empty for as long as the queue took to drain and the stampede fed itself (bench/heartbeats.py
saw 126 policy reads in 12 s where 3 were due). Go's `x/sync/singleflight` is the model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """`await flights.run(key, load)` calls `load()` unless a call for `key` is in flight, in
    which case it waits for that one and shares its result or exception."""

    def __init__(self) -> None:
        # Keyed by event loop too: a task belongs to one loop (tests and the CLI run several).
        self._calls: dict[tuple[asyncio.AbstractEventLoop, K], asyncio.Task[V]] = {}

    async def run(self, key: K, load: Callable[[], Coroutine[Any, Any, V]]) -> V:
        loop = asyncio.get_running_loop()
        slot = (loop, key)
        call = self._calls.get(slot)
        if call is None:
            call = loop.create_task(load())
            self._calls[slot] = call
            call.add_done_callback(lambda done: self._landed(slot, done))
        # Shielded: a caller that is cancelled (its client went away) leaves the load running
        # for the others.
        return await asyncio.shield(call)

    def in_flight(self) -> int:
        return len(self._calls)

    def _landed(self, slot: tuple[asyncio.AbstractEventLoop, K], call: asyncio.Task[V]) -> None:
        self._calls.pop(slot, None)
        if not call.cancelled():
            call.exception()  # retrieved here too, so no "never retrieved" warning if all left
