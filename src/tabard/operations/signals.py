"""Waking long-polls: an agent's instances wait for commands (`GET …/commands?wait=30`) and
answer as soon as one is created, on any replica.

A created command is announced on the bus (a broadcast subject outside the durable stream);
every process listens once and wakes its own waiters for that agent. Announcements are at most
once, so a waiter also looks again every few seconds: a lost wake-up costs latency, never a
command.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator

from tabard.core.bus import EventBus
from tabard.core.logging import get_logger

log = get_logger(__name__)

# Not under the stream's `<prefix>.` subjects: never stored. The deployment's prefix keeps
# deployments sharing a NATS account from waking each other's waiters.
SUBJECT_SUFFIX = "-ops.commands"
RECHECK_SECONDS = 5.0


class Wakeup:
    """One waiter's wake-up: set by an announcement, cleared when waited on."""

    def __init__(self, event: asyncio.Event) -> None:
        self._event = event

    async def wait(self, seconds: float) -> None:
        """Return when a command may be waiting (or after `seconds`, at most RECHECK_SECONDS)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout=min(seconds, RECHECK_SECONDS))
        self._event.clear()


class CommandSignals:
    def __init__(self, bus: EventBus, prefix: str = "tabard") -> None:
        self._bus = bus
        self._subject = prefix + SUBJECT_SUFFIX
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def announce(self, agent_id: str) -> None:
        """A command for `agent_id` was committed: wake its waiters here and elsewhere."""
        self._wake(agent_id)
        try:
            await self._bus.publish(self._subject, agent_id.encode())
        except Exception:  # the waiters elsewhere look again within RECHECK_SECONDS
            log.warning("command announcement not published", agent_id=agent_id)

    @contextlib.contextmanager
    def listening(self, agent_id: str) -> Iterator[Wakeup]:
        """Listen for `agent_id`'s commands before looking for them, so one created between
        the look and the wait still wakes the waiter."""
        event = asyncio.Event()
        self._waiters[agent_id].add(event)
        try:
            yield Wakeup(event)
        finally:
            waiters = self._waiters.get(agent_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[agent_id]

    def _wake(self, agent_id: str) -> None:
        for event in self._waiters.get(agent_id, ()):
            event.set()

    async def _listen(self) -> None:
        while True:
            try:
                async with self._bus.subscribe(self._subject) as messages:
                    async for message in messages:
                        self._wake(message.payload.decode())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("command announcements: subscription lost; retrying")
                await asyncio.sleep(1.0)
