"""The per-process parts of operations, and the background work they need.

The domain splits by concept: `registration` (registration tokens, enrollment), `heartbeats`
(the coalescing buffer and its flush), `status` (presence computed on read, transitions),
`actions` (what an agent can run), `commands` (lifecycle, leases, results, one-time secrets),
`signals` (waking long-polls).
"""

from __future__ import annotations

from dataclasses import dataclass

from tabard.core.bus import EventBus
from tabard.core.clock import Clock
from tabard.core.config import Settings
from tabard.core.context import SYSTEM, Context
from tabard.core.db import Database
from tabard.operations import commands, heartbeats, status
from tabard.operations.heartbeats import HeartbeatBuffer
from tabard.operations.signals import CommandSignals

HEARTBEAT_FLUSH_JOB = "operations.heartbeat_flush"
PRESENCE_JOB = "operations.presence"
COMMAND_SWEEP_JOB = "operations.command_sweep"


@dataclass
class Operations:
    """What one process keeps for operations: its unflushed heartbeats and its long-polls."""

    database: Database
    clock: Clock
    settings: Settings
    heartbeats: HeartbeatBuffer
    signals: CommandSignals

    @classmethod
    def build(
        cls, database: Database, clock: Clock, settings: Settings, bus: EventBus
    ) -> Operations:
        return cls(
            database,
            clock,
            settings,
            HeartbeatBuffer(clock),
            CommandSignals(bus, settings.bus_subjects_prefix),
        )

    @property
    def offline_threshold(self) -> float:
        return self.settings.agent_offline_threshold_seconds

    async def flush_heartbeats(self) -> int:
        """Write this process's buffered heartbeats (every process, every flush interval)."""
        return await heartbeats.flush(self.database, self.heartbeats, self.clock)

    async def announce_presence(self) -> int:
        """Record agent.online / agent.offline transitions (one leader)."""
        async with self.database.unit_of_work() as session:
            return await status.announce_transitions(
                session, Context(SYSTEM, self.clock), self.offline_threshold
            )

    async def sweep_commands(self) -> int:
        """Persist expired commands and lapsed leases (one leader)."""
        async with self.database.unit_of_work() as session:
            return await commands.sweep(session, Context(SYSTEM, self.clock))
