"""Webhook deliveries: one per (subscription, event), made when the relay numbers published
events, for every active subscription of the event's org whose patterns match (once: unique per
subscription and event); read with their attempts, and replayed once dead. Sending them is
`sender`'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit import service as audit
from tabard.core.context import Context
from tabard.core.ids import new_id
from tabard.core.logging import get_logger
from tabard.core.pagination import DEFAULT_LIMIT, decode_cursor, page_of
from tabard.events import catalogue
from tabard.events.envelope import iso
from tabard.events.errors import DeliveryNotFound, DeliveryNotReplayable
from tabard.events.models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from tabard.events.schemas import DeliveryStatus
from tabard.events.subscriptions import get_subscription

log = get_logger(__name__)


async def fan_out(session: AsyncSession, events: Sequence[dict[str, Any]], now: datetime) -> int:
    """A delivery for every active subscription of each event's org that wants it; an event
    fanned out before (another relay) gets no second one. Returns how many were made."""
    orgs = {event["org"] for event in events if event["org"] is not None}
    if not orgs:
        return 0
    # FOR KEY SHARE: a subscription being deleted meanwhile waits for this transaction (then
    # takes these deliveries with it) instead of failing the relay's round.
    statement = (
        select(WebhookSubscription)
        .where(WebhookSubscription.org_id.in_(orgs), WebhookSubscription.active.is_(True))
        .with_for_update(read=True, key_share=True)
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
    if not rows:
        return 0
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement_insert = insert(WebhookDelivery).on_conflict_do_nothing(
        index_elements=["subscription_id", "event_id"]
    )
    await session.execute(statement_insert, rows)  # executemany: batched by the driver
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
