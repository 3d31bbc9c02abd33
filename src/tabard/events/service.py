"""The per-process parts of events, and the background work that moves them.

The domain splits by concept: `catalogue` (event types), `envelope` (what consumers see),
`relay` (outbox → stream and deliveries), `streams` (SSE), `subscriptions` (webhooks and their
secrets), `deliveries` (fan-out, sending, retries, dead letters), `signing` (Standard Webhooks),
`egress` (where Tabard may send).

    commit → outbox → relay (one leader) → stream `tabard.<org>.<type>` (bus)
                                         → deliveries (same transaction as marking)
    deliveries → sender (every replica) → receivers
    relay → "published" on the bus → SSE streams (which read the outbox) look again
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core import outbox
from tabard.core.bus import EventBus
from tabard.core.clock import Clock
from tabard.core.config import Settings
from tabard.core.db import Database
from tabard.core.keystore import KeyStore
from tabard.core.leases import Lease
from tabard.core.logging import get_logger
from tabard.core.metrics import EVENTS_PUBLISHED
from tabard.events import relay, retention
from tabard.events.sender import Sender

log = get_logger(__name__)

RELAY_JOB = "events.relay"
RETENTION_JOB = "events.retention"
RETENTION_INTERVAL_SECONDS = 3600.0
_RELAY_BATCHES_PER_ROUND = 20
# The relay's leader renews its lease this often; a dead leader is replaced within the TTL.
_LEASE_RENEW_SECONDS = 5.0
_LEASE_TTL_SECONDS = 15.0


@dataclass
class Events:
    database: Database
    bus: EventBus
    keystore: KeyStore
    settings: Settings
    clock: Clock
    http: httpx.AsyncClient = field(
        default_factory=lambda: httpx.AsyncClient(follow_redirects=False, trust_env=False)
    )

    def __post_init__(self) -> None:
        self.sender = Sender(self.database, self.keystore, self.settings, self.clock, self.http)
        self._committed = asyncio.Event()
        self.database.commit_listeners.append(self._on_commit)

    async def relay(self) -> int:
        """Publish what is committed, batch after batch, until caught up (or the round's cap);
        then start sending the deliveries it made."""
        total = 0
        for _ in range(_RELAY_BATCHES_PER_ROUND):
            published = await relay.relay_once(
                self.database, self.bus, self.clock, prefix=self.settings.bus_subjects_prefix
            )
            EVENTS_PUBLISHED.inc(published)
            total += published
            if published < relay.BATCH:
                break
        if total:
            await self.sender.send_due()
        return total

    async def relay_forever(self) -> None:
        """Relay while this process holds the relay's lease: at once after a local commit
        that wrote events, and every `outbox_relay_interval_seconds` for other replicas'."""
        lease = Lease(self.database, self.clock, f"job:{RELAY_JOB}", _LEASE_TTL_SECONDS)
        leader, renewed_at = False, float("-inf")
        try:
            while True:
                try:
                    if time.monotonic() - renewed_at >= _LEASE_RENEW_SECONDS:
                        leader, renewed_at = await lease.acquire(), time.monotonic()
                    if leader:
                        await self.relay()
                except Exception:  # one bad round must not stop the relay for good
                    log.exception("outbox relay round failed")
                    leader, renewed_at = False, float("-inf")
                await self._wait_for_commit(self.settings.outbox_relay_interval_seconds)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(lease.release())

    async def send_due(self) -> int:
        return await self.sender.send_due()

    async def sweep(self) -> int:
        return await retention.sweep(self.database, self.clock, self.settings.event_retention_days)

    async def close(self) -> None:
        if self._on_commit in self.database.commit_listeners:
            self.database.commit_listeners.remove(self._on_commit)
        await self.sender.drain()
        await self.http.aclose()

    def _on_commit(self, session: AsyncSession) -> None:
        if outbox.wrote_events(session):
            self._committed.set()

    async def _wait_for_commit(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._committed.wait(), timeout=seconds)
        self._committed.clear()
