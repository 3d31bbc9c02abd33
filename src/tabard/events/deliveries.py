"""Webhook deliveries: one per (subscription, event), retried until it succeeds or dies.

Fan-out: when the relay numbers published events it makes a delivery for every active
subscription of the event's org whose patterns match (once: unique per subscription and event).
Sending: due deliveries are leased (a conditional UPDATE, so replicas never send the same
attempt twice) and sent concurrently, at most `webhook_concurrency` per process and
`webhook_concurrency_per_subscription` per subscription (one while its last attempts failed),
so a slow receiver holds only its own slots. A 2xx succeeds; anything else (or no answer within
the timeout) is retried after 10 s, 1 min, 5 min, 30 min, 1 h, 2 h, 4 h, 6 h, 10 h (±20 %),
about a day for 10 attempts; then the delivery is dead: a dead letter, listed and replayable.
A subscription whose attempts fail `webhook_pause_after_failures` times in a row is paused
(`webhook.paused`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Select, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit import service as audit
from tabard.core import outbox
from tabard.core.clock import Clock
from tabard.core.config import Settings
from tabard.core.context import SYSTEM, Context
from tabard.core.db import Database
from tabard.core.ids import new_id
from tabard.core.keystore import KeyStore
from tabard.core.logging import get_logger
from tabard.core.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_DEAD_LETTERS, WEBHOOK_LATENCY
from tabard.core.pagination import DEFAULT_LIMIT, decode_cursor, page_of
from tabard.events import catalogue, egress, signing
from tabard.events.envelope import encode, iso
from tabard.events.errors import DeliveryNotFound, DeliveryNotReplayable
from tabard.events.models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from tabard.events.schemas import DeliveryStatus
from tabard.events.subscriptions import get_subscription, signing_secrets

log = get_logger(__name__)

RETRY_DELAYS = (10, 60, 300, 1800, 3600, 7200, 14400, 21600, 36000)  # seconds, then dead
_JITTER = 0.2
_KEPT_RESPONSE_BYTES = 2048
_CLAIM_BATCH = 200
FAILING_AFTER = 3  # consecutive failed attempts after which a subscription gets one slot
_INSERT_CHUNK = 500  # rows per INSERT: SQLite allows 32,766 bound values


def retry_delay(attempts: int) -> float:
    """Seconds to wait after `attempts` failed attempts (with jitter)."""
    base = RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1]
    return base * random.uniform(1 - _JITTER, 1 + _JITTER)  # noqa: S311 - jitter, not crypto


async def fan_out(session: AsyncSession, events: Sequence[dict[str, Any]], now: datetime) -> int:
    """A delivery for every active subscription of each event's org that wants it; an event
    fanned out before (another relay) gets no second one. Returns how many were made."""
    orgs = {event["org"] for event in events if event["org"] is not None}
    if not orgs:
        return 0
    statement = select(WebhookSubscription).where(
        WebhookSubscription.org_id.in_(orgs), WebhookSubscription.active.is_(True)
    )
    by_org: dict[str, list[WebhookSubscription]] = {}
    for subscription in (await session.execute(statement)).scalars():
        by_org.setdefault(subscription.org_id, []).append(subscription)
    rows = [
        _delivery_row(subscription, event, now)
        for event in events
        for subscription in by_org.get(event["org"], ())
        if catalogue.matches(subscription.event_types, event["type"])
    ]
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    for start in range(0, len(rows), _INSERT_CHUNK):
        statement_insert = (
            insert(WebhookDelivery)
            .values(rows[start : start + _INSERT_CHUNK])
            .on_conflict_do_nothing(index_elements=["subscription_id", "event_id"])
        )
        await session.execute(statement_insert)
    return len(rows)


def _delivery_row(
    subscription: WebhookSubscription, event: dict[str, Any], now: datetime
) -> dict[str, Any]:
    return {
        "id": new_id(),
        "org_id": subscription.org_id,
        "subscription_id": subscription.id,
        "event_id": event["id"],
        "event_type": event["type"],
        "payload": event,
        "status": DeliveryStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


async def send_test(
    session: AsyncSession, ctx: Context, org_id: str, subscription_id: str
) -> WebhookDelivery:
    """A `webhook.test` event for this subscription only, delivered like any other."""
    subscription = await get_subscription(session, org_id, subscription_id)
    now = ctx.clock.now()
    event = {
        "id": new_id(),
        "type": "webhook.test",
        "org": org_id,
        "time": iso(now),
        "subject": subscription.id,
        "data": {"subscription_id": subscription.id},
    }
    delivery = WebhookDelivery(**_delivery_row(subscription, event, now))
    session.add(delivery)
    return delivery


@dataclass
class Sender:
    """Sends due deliveries of this process, within its concurrency limits."""

    database: Database
    keystore: KeyStore
    settings: Settings
    clock: Clock
    http: httpx.AsyncClient

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.settings.webhook_concurrency)
        self._in_flight: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    async def send_due(self) -> int:
        """Lease what is due and start sending it; returns how many were started."""
        leased = await self._lease()
        for delivery in leased:
            self._in_flight[delivery.subscription_id] += 1
            task = asyncio.create_task(self._send(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(leased)

    async def drain(self) -> None:
        """Wait for the attempts in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _lease(self) -> list[WebhookDelivery]:
        """Lease due deliveries, no more than this process has free slots for (a leased one
        waiting for a slot could outlive its lease and be sent twice), and no more per
        subscription than its cap. Candidates are read first without a write lock, since
        most rounds find nothing."""
        free = self.settings.webhook_concurrency - sum(self._in_flight.values())
        if free <= 0:
            return []
        now = self.clock.now()
        async with self.database.read_only() as session:
            candidates = [(row[0], row[1]) for row in await session.execute(_due(now))]
        if not candidates:
            return []
        lease = now + timedelta(seconds=self.settings.webhook_timeout_seconds + 30)
        leased: list[WebhookDelivery] = []
        taken: Counter[str] = Counter()
        async with self.database.unit_of_work() as session:
            for delivery, failures in candidates:
                subscription_id = delivery.subscription_id
                cap = self._cap(failures)
                if self._in_flight[subscription_id] + taken[subscription_id] >= cap:
                    continue  # a slow receiver's backlog waits; others go on
                if await _take_lease(session, delivery.id, now, lease):
                    taken[subscription_id] += 1
                    leased.append(delivery)
                    if len(leased) == free:
                        break
        return leased

    def _cap(self, consecutive_failures: int) -> int:
        """Attempts in flight allowed for a subscription: one while it is failing, so receivers
        that are down hold one slot each and cannot take every slot from healthy ones."""
        if consecutive_failures >= FAILING_AFTER:
            return 1
        return self.settings.webhook_concurrency_per_subscription

    async def _send(self, delivery: WebhookDelivery) -> None:
        try:
            async with self._slots:
                outcome = await self._attempt(delivery)
            await self._record(delivery, outcome)
        except Exception:  # one delivery's trouble must not stop the others
            log.exception("webhook delivery failed to record", delivery_id=delivery.id)
        finally:
            self._in_flight[delivery.subscription_id] -= 1

    async def _attempt(self, delivery: WebhookDelivery) -> _Outcome:
        async with self.database.read_only() as session:
            subscription = await session.get(WebhookSubscription, delivery.subscription_id)
        if subscription is None:
            return _Outcome(None, "the subscription was deleted", None, 0)
        body = encode(delivery.payload)
        now = self.clock.now()
        secrets = signing_secrets(self.keystore, subscription, now)
        headers = {
            **signing.signed_headers(secrets, delivery.event_id, int(now.timestamp()), body),
            "Content-Type": "application/json",
            "User-Agent": "Tabard-Webhooks/1",
        }
        started = time.perf_counter()
        try:
            response = await egress.post(
                self.http,
                subscription.url,
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

    async def _record(self, delivery: WebhookDelivery, outcome: _Outcome) -> None:
        now = self.clock.now()
        async with self.database.unit_of_work() as session:
            row = await session.get(WebhookDelivery, delivery.id, with_for_update=True)
            # Locked (FOR NO KEY UPDATE: the relay's new deliveries may still reference it):
            # attempts of one subscription finishing together must all count.
            subscription = await session.get(
                WebhookSubscription, delivery.subscription_id, with_for_update={"key_share": True}
            )
            if row is None or subscription is None:
                return
            row.attempts += 1
            row.leased_until = None
            session.add(
                WebhookAttempt(
                    id=new_id(),
                    delivery_id=row.id,
                    number=row.attempts,
                    attempted_at=now,
                    duration_ms=outcome.duration_ms,
                    status_code=outcome.status_code,
                    error=outcome.error,
                    response_body=outcome.response_body,
                )
            )
            if outcome.succeeded:
                WEBHOOK_ATTEMPTS.labels("succeeded").inc()
                row.status, row.delivered_at, row.next_attempt_at = "succeeded", now, None
                subscription.consecutive_failures = 0
                return
            WEBHOOK_ATTEMPTS.labels("failed").inc()
            subscription.consecutive_failures += 1
            if row.attempts >= self.settings.webhook_max_attempts:
                row.status, row.dead_at, row.next_attempt_at = DeliveryStatus.DEAD.value, now, None
                WEBHOOK_DEAD_LETTERS.labels(row.event_type).inc()
            else:
                row.next_attempt_at = now + timedelta(seconds=retry_delay(row.attempts))
            if (
                subscription.active
                and subscription.consecutive_failures >= self.settings.webhook_pause_after_failures
            ):
                await _pause(session, subscription, self.clock)


def _due(now: datetime) -> Select[WebhookDelivery, int]:
    return (
        select(WebhookDelivery, WebhookSubscription.consecutive_failures)
        .join(WebhookSubscription)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING.value,
            WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < now),
            WebhookSubscription.active.is_(True),
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(_CLAIM_BATCH)
    )


async def _take_lease(
    session: AsyncSession, delivery_id: str, now: datetime, until: datetime
) -> bool:
    """Lease one delivery unless another sender did first (a conditional UPDATE)."""
    result = await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == DeliveryStatus.PENDING.value,
            or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < now),
        )
        .values(leased_until=until)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


@dataclass(frozen=True)
class _Outcome:
    status_code: int | None
    error: str | None
    response_body: str | None
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


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


# Reading and replaying --------------------------------------------------------------------------


async def list_deliveries(
    session: AsyncSession,
    org_id: str,
    subscription_id: str,
    *,
    status: DeliveryStatus | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> tuple[list[WebhookDelivery], str | None]:
    await get_subscription(session, org_id, subscription_id)
    statement = select(WebhookDelivery).where(
        WebhookDelivery.subscription_id == subscription_id, WebhookDelivery.org_id == org_id
    )
    if status is not None:
        statement = statement.where(WebhookDelivery.status == status.value)
    after = decode_cursor(cursor)
    if after is not None:
        statement = statement.where(WebhookDelivery.id < str(after))
    statement = statement.order_by(WebhookDelivery.id.desc()).limit(limit + 1)
    rows = list((await session.execute(statement)).scalars())
    return page_of(rows, limit, key=lambda row: row.id)


async def get_delivery(
    session: AsyncSession, org_id: str, subscription_id: str, delivery_id: str
) -> WebhookDelivery:
    await get_subscription(session, org_id, subscription_id)
    statement = select(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id,
        WebhookDelivery.subscription_id == subscription_id,
        WebhookDelivery.org_id == org_id,
    )
    delivery = (await session.execute(statement)).scalar_one_or_none()
    if delivery is None:
        raise DeliveryNotFound(f"no delivery {delivery_id!r}")
    return delivery


async def attempts_of(session: AsyncSession, delivery_ids: Sequence[str]) -> dict[str, list[Any]]:
    if not delivery_ids:
        return {}
    statement = (
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id.in_(delivery_ids))
        .order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempted_at)
    )
    grouped: dict[str, list[Any]] = {}
    for attempt in (await session.execute(statement)).scalars():
        grouped.setdefault(attempt.delivery_id, []).append(attempt)
    return grouped


async def replay(
    session: AsyncSession,
    ctx: Context,
    org_id: str,
    subscription_id: str,
    delivery_id: str | None = None,
) -> int:
    """Send dead deliveries again, with a fresh round of attempts: one, or all of the
    subscription's. Replaying a delivery that is not dead is a 409."""
    await get_subscription(session, org_id, subscription_id)
    if delivery_id is not None:
        delivery = await get_delivery(session, org_id, subscription_id, delivery_id)
        if delivery.status != DeliveryStatus.DEAD.value:
            raise DeliveryNotReplayable(f"delivery {delivery_id!r} is {delivery.status}")
    statement = (
        update(WebhookDelivery)
        .where(
            WebhookDelivery.subscription_id == subscription_id,
            WebhookDelivery.status == DeliveryStatus.DEAD.value,
        )
        .values(
            status=DeliveryStatus.PENDING.value,
            attempts=0,
            next_attempt_at=ctx.clock.now(),
            dead_at=None,
            leased_until=None,
        )
        .execution_options(synchronize_session=False)
    )
    if delivery_id is not None:
        statement = statement.where(WebhookDelivery.id == delivery_id)
    replayed = int(getattr(await session.execute(statement), "rowcount", 0))
    details = {"subscription_id": subscription_id, "delivery_id": delivery_id, "replayed": replayed}
    await audit.record(
        session,
        ctx,
        action="webhook.replayed",
        org_id=org_id,
        target=subscription_id,
        details=details,
    )
    return replayed
