"""Sending webhook deliveries: lease what is due, POST it, record how it went.

Every process runs a sender. A round leases due deliveries in one conditional UPDATE (so
replicas never send the same attempt twice), no more than the process has free slots for
(`webhook_concurrency`; a leased delivery waiting for a slot could outlive its lease) and no
more per subscription than its cap (`webhook_concurrency_per_subscription`, one while its last
attempts failed), so a slow receiver holds only its own slots. Outcomes are recorded in shared
transactions (group commit), and a finished attempt starts the next round at once: the pipeline
stays full without waiting for the next tick.

A 2xx succeeds; anything else, or no answer within the timeout, is retried after 10 s, 1 min,
5 min, 30 min, 1 h, 2 h, 4 h, 6 h, 10 h (±20 %): about a day for 10 attempts; then the delivery
is dead (a dead letter, listed and replayable). A subscription whose attempts fail
`webhook_pause_after_failures` times in a row is paused (`webhook.paused`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import httpx
from sqlalchemy import Select, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from tabard.audit import service as audit
from tabard.core import outbox
from tabard.core.clock import Clock
from tabard.core.config import Settings
from tabard.core.context import SYSTEM, Context
from tabard.core.db import Database
from tabard.core.group_commit import GroupCommitter
from tabard.core.ids import new_id
from tabard.core.keystore import KeyStore
from tabard.core.logging import get_logger
from tabard.core.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_DEAD_LETTERS, WEBHOOK_LATENCY
from tabard.events import egress, signing
from tabard.events.envelope import encode
from tabard.events.models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from tabard.events.schemas import DeliveryStatus
from tabard.events.subscriptions import signing_secrets

log = get_logger(__name__)

RETRY_DELAYS = (10, 60, 300, 1800, 3600, 7200, 14400, 21600, 36000)  # seconds, then dead
FAILING_AFTER = 3  # consecutive failed attempts after which a subscription gets one slot
_JITTER = 0.2
_KEPT_RESPONSE_BYTES = 2048
_LEASE_MARGIN_SECONDS = 30


def retry_delay(attempts: int) -> float:
    """Seconds to wait after `attempts` failed attempts (with jitter)."""
    base = RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1]
    return base * random.uniform(1 - _JITTER, 1 + _JITTER)  # noqa: S311 - jitter, not crypto


@dataclass(frozen=True)
class _Target:
    """Where and how one subscription's deliveries go, read once per round."""

    url: str
    secrets: list[str]


@dataclass(frozen=True)
class _Outcome:
    status_code: int | None
    error: str | None
    response_body: str | None
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class _Attempted:
    delivery_id: str
    subscription_id: str
    outcome: _Outcome


class Sender:
    """Sends this process's share of due deliveries, within its concurrency limits."""

    def __init__(
        self,
        database: Database,
        keystore: KeyStore,
        settings: Settings,
        clock: Clock,
        http: httpx.AsyncClient,
    ) -> None:
        self.database = database
        self.keystore = keystore
        self.settings = settings
        self.clock = clock
        self.http = http
        self._in_flight: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._recorder: GroupCommitter[_Attempted] = GroupCommitter(database, self._record)
        self._wake = asyncio.Event()

    async def send_due(self) -> int:
        """Lease what is due and start sending it; returns how many were started."""
        leased = await self._lease()
        for delivery, target in leased:
            self._in_flight[delivery.subscription_id] += 1
            task = asyncio.create_task(self._send(delivery, target))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(leased)

    def wake(self) -> None:
        """New deliveries may be due (the relay made some): `run_forever` looks at once."""
        self._wake.set()

    async def run_forever(self, interval_seconds: float) -> None:
        """A round whenever an attempt finishes or deliveries are made, and every interval."""
        while True:
            try:
                await self.send_due()
            except Exception:  # one bad round must not stop sending for good
                log.exception("webhook sender round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval_seconds)
            self._wake.clear()

    async def drain(self) -> None:
        """Wait for the attempts in flight and their records (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._recorder.close()

    # Leasing ------------------------------------------------------------------------------------

    async def _lease(self) -> list[tuple[WebhookDelivery, _Target]]:
        """Lease due deliveries within the free slots and each subscription's cap. Candidates
        are read without the write lock first, since most rounds find nothing."""
        free = self.settings.webhook_concurrency - sum(self._in_flight.values())
        if free <= 0:
            return []
        now = self.clock.now()
        cap = self.settings.webhook_concurrency_per_subscription
        async with self.database.read_only() as session:
            due = await session.execute(_due(now, cap, limit=free + sum(self._in_flight.values())))
            candidates = [(row[0], row[1], row[2]) for row in due]
        chosen = self._within_caps(candidates, free)
        if not chosen:
            return []
        until = now + timedelta(
            seconds=self.settings.webhook_timeout_seconds + _LEASE_MARGIN_SECONDS
        )
        async with self.database.unit_of_work() as session:
            won = await _take_leases(session, chosen, now, until)
        if not won:
            return []
        async with self.database.read_only() as session:  # leased: nobody else changes them
            statement = select(WebhookDelivery).where(WebhookDelivery.id.in_(won))
            leased = list((await session.execute(statement)).scalars())
            targets = await self._targets(session, {d.subscription_id for d in leased}, now)
        return [(d, targets[d.subscription_id]) for d in leased if d.subscription_id in targets]

    def _within_caps(self, candidates: Sequence[tuple[str, str, int]], free: int) -> list[str]:
        """The ids to lease: as many as there are free slots, within each subscription's cap."""
        chosen: list[str] = []
        taken: Counter[str] = Counter()
        for delivery_id, subscription_id, failures in candidates:
            if self._in_flight[subscription_id] + taken[subscription_id] >= self._cap(failures):
                continue  # a slow receiver's backlog waits; others go on
            taken[subscription_id] += 1
            chosen.append(delivery_id)
            if len(chosen) == free:
                break
        return chosen

    def _cap(self, consecutive_failures: int) -> int:
        """Attempts in flight allowed for a subscription: one while it is failing, so receivers
        that are down hold one slot each and cannot take every slot from healthy ones."""
        if consecutive_failures >= FAILING_AFTER:
            return 1
        return self.settings.webhook_concurrency_per_subscription

    async def _targets(
        self, session: AsyncSession, subscription_ids: set[str], now: datetime
    ) -> dict[str, _Target]:
        if not subscription_ids:
            return {}
        statement = select(WebhookSubscription).where(WebhookSubscription.id.in_(subscription_ids))
        return {
            subscription.id: _Target(
                subscription.url, signing_secrets(self.keystore, subscription, now)
            )
            for subscription in (await session.execute(statement)).scalars()
        }

    # Sending ------------------------------------------------------------------------------------

    async def _send(self, delivery: WebhookDelivery, target: _Target) -> None:
        try:
            outcome = await self._attempt(delivery, target)
        except Exception:  # a bug, not the receiver: the lease lapses and it is tried again
            log.exception("webhook attempt failed", delivery_id=delivery.id)
            return
        finally:
            # The receiver's slot is free; the delivery stays leased until it is recorded.
            self._in_flight[delivery.subscription_id] -= 1
            self._wake.set()
        try:
            await self._recorder.submit(_Attempted(delivery.id, delivery.subscription_id, outcome))
        except Exception:  # one delivery's trouble must not stop the others
            log.exception("webhook delivery failed to record", delivery_id=delivery.id)

    async def _attempt(self, delivery: WebhookDelivery, target: _Target) -> _Outcome:
        body = encode(delivery.payload)
        now = self.clock.now()
        headers = {
            **signing.signed_headers(target.secrets, delivery.event_id, int(now.timestamp()), body),
            "Content-Type": "application/json",
            "User-Agent": "Tabard-Webhooks/1",
        }
        started = time.perf_counter()
        try:
            response = await egress.post(
                self.http,
                target.url,
                body,
                headers,
                settings=self.settings,
                seconds=self.settings.webhook_timeout_seconds,
            )
        except egress.EgressRefused as exc:
            return _Outcome(None, f"refused: {exc}", None, _ms(started))
        except httpx.TimeoutException:
            return _Outcome(None, "timed out", None, _ms(started))
        except httpx.HTTPError as exc:
            return _Outcome(None, f"{type(exc).__name__}: {exc}"[:500], None, _ms(started))
        WEBHOOK_LATENCY.observe(time.perf_counter() - started)
        text = response.text[:_KEPT_RESPONSE_BYTES]
        return _Outcome(response.status_code, None, text, _ms(started))

    # Recording ----------------------------------------------------------------------------------

    async def _record(self, session: AsyncSession, attempted: Sequence[_Attempted]) -> None:
        """Record a batch of attempts: each delivery's outcome, and each subscription's run of
        failures (locked, so attempts finishing together on several replicas all count)."""
        now = self.clock.now()
        # Subscriptions first, then deliveries: the order a DELETE of a subscription locks
        # them in (it cascades to its deliveries), so the two never deadlock.
        subscriptions = await _locked(
            session, WebhookSubscription, [a.subscription_id for a in attempted], key_share=True
        )
        deliveries = await _locked(session, WebhookDelivery, [a.delivery_id for a in attempted])
        for item in attempted:
            delivery = deliveries.get(item.delivery_id)
            subscription = subscriptions.get(item.subscription_id)
            if delivery is None or subscription is None:
                continue  # deleted with its subscription meanwhile
            self._apply(session, delivery, subscription, item.outcome, now)
        for subscription in subscriptions.values():
            if (
                subscription.active
                and subscription.consecutive_failures >= self.settings.webhook_pause_after_failures
            ):
                await _pause(session, subscription, self.clock)

    def _apply(
        self,
        session: AsyncSession,
        delivery: WebhookDelivery,
        subscription: WebhookSubscription,
        outcome: _Outcome,
        now: datetime,
    ) -> None:
        delivery.attempts += 1
        delivery.leased_until = None
        session.add(
            WebhookAttempt(
                id=new_id(),
                delivery_id=delivery.id,
                number=delivery.attempts,
                attempted_at=now,
                duration_ms=outcome.duration_ms,
                status_code=outcome.status_code,
                error=outcome.error,
                response_body=outcome.response_body,
            )
        )
        if outcome.succeeded:
            WEBHOOK_ATTEMPTS.labels("succeeded").inc()
            delivery.status, delivery.delivered_at = DeliveryStatus.SUCCEEDED.value, now
            delivery.next_attempt_at = None
            subscription.consecutive_failures = 0
            return
        WEBHOOK_ATTEMPTS.labels("failed").inc()
        subscription.consecutive_failures += 1
        if delivery.attempts >= self.settings.webhook_max_attempts:
            delivery.status, delivery.dead_at = DeliveryStatus.DEAD.value, now
            delivery.next_attempt_at = None
            WEBHOOK_DEAD_LETTERS.labels(delivery.event_type).inc()
        else:
            delivery.next_attempt_at = now + timedelta(seconds=retry_delay(delivery.attempts))


def _due(now: datetime, cap: int, limit: int) -> Select[str, str, int]:
    """Due deliveries, oldest first, at most as many per subscription as it may have in flight
    (one while failing): only what choosing needs, and never a slow receiver's whole backlog."""
    rank = (
        func.row_number()
        .over(
            partition_by=WebhookDelivery.subscription_id, order_by=WebhookDelivery.next_attempt_at
        )
        .label("rank")
    )
    due = (
        select(
            WebhookDelivery.id,
            WebhookDelivery.subscription_id,
            WebhookSubscription.consecutive_failures.label("failures"),
            WebhookDelivery.next_attempt_at,
            rank,
        )
        .join(WebhookSubscription)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING.value,
            WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < now),
            WebhookSubscription.active.is_(True),
        )
        .subquery()
    )
    allowed = case((due.c.failures >= FAILING_AFTER, 1), else_=cap)
    return (
        select(due.c.id, due.c.subscription_id, due.c.failures)
        .where(due.c.rank <= allowed)
        .order_by(due.c.next_attempt_at)
        .limit(limit)
    )


async def _take_leases(
    session: AsyncSession, delivery_ids: list[str], now: datetime, until: datetime
) -> set[str]:
    """Lease the deliveries no other sender leased first; the ids this one won."""
    statement = (
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id.in_(delivery_ids),
            WebhookDelivery.status == DeliveryStatus.PENDING.value,
            or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < now),
        )
        .values(leased_until=until)
        .returning(WebhookDelivery.id)
        .execution_options(synchronize_session=False)
    )
    return set((await session.execute(statement)).scalars())


Row = TypeVar("Row", WebhookDelivery, WebhookSubscription)


async def _locked(
    session: AsyncSession, model: type[Row], ids: list[str], *, key_share: bool = False
) -> dict[str, Row]:
    """Rows by id, locked in id order (so concurrent batches never deadlock). FOR NO KEY
    UPDATE (`key_share`) for subscriptions: the relay may be inserting deliveries that
    reference them."""
    statement = (
        select(model)
        .where(model.id.in_(set(ids)))
        .order_by(model.id)
        .with_for_update(key_share=key_share)
    )
    if model is WebhookDelivery:
        statement = statement.options(defer(WebhookDelivery.payload))  # not needed to record
    return {row.id: row for row in (await session.execute(statement)).scalars()}


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


async def _pause(session: AsyncSession, subscription: WebhookSubscription, clock: Clock) -> None:
    now = clock.now()
    subscription.active, subscription.paused_at, subscription.updated_at = False, now, now
    details = {
        "subscription_id": subscription.id,
        "url": subscription.url,
        "consecutive_failures": subscription.consecutive_failures,
    }
    ctx = Context(SYSTEM, clock)
    await audit.record(
        session,
        ctx,
        action="webhook.paused",
        org_id=subscription.org_id,
        target=subscription.id,
        details=details,
    )
    await outbox.emit(
        session,
        clock,
        type="webhook.paused",
        org_id=subscription.org_id,
        subject=subscription.id,
        data=details,
    )
