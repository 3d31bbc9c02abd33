"""HTTP routes of events: the catalogue, the SSE stream, webhook subscriptions and deliveries."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status
from sse_starlette import EventSourceResponse

from tabard.core.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page
from tabard.core.runtime import ContextDep, RuntimeDep
from tabard.events import catalogue, deliveries, policy, streams, subscriptions
from tabard.events.models import WebhookDelivery
from tabard.events.schemas import (
    AttemptOut,
    DeliveryOut,
    DeliveryStatus,
    EventPattern,
    EventTypeOut,
    Replayed,
    SecretRotation,
    SubscriptionCreate,
    SubscriptionCreated,
    SubscriptionOut,
    SubscriptionUpdate,
)
from tabard.events.service import Events

router = APIRouter(prefix="/v1", tags=["events"])
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
_WEBHOOK = "/orgs/{org_id}/webhooks/{subscription_id}"
_PING_SECONDS = 15
MAX_BACKLOG = 1000


def _events(request: Request) -> Events:
    events: Events = request.app.state.events
    return events


@router.get("/event-types", response_model=list[EventTypeOut])
async def event_types() -> list[EventTypeOut]:
    """Every event type, what it means, and the schema of its `data`."""
    return [
        EventTypeOut(type=name, description=entry[0], data_schema=catalogue.data_schema(name))
        for name, entry in catalogue.EVENT_TYPES.items()
    ]


@router.get("/events", response_class=EventSourceResponse)
async def stream_events(
    runtime: RuntimeDep,
    ctx: ContextDep,
    org: str | None = None,
    type: Annotated[list[EventPattern] | None, Query()] = None,
    after: str | None = Query(default=None, description="An event id to resume after"),
    last: Annotated[int, Query(ge=0, le=MAX_BACKLOG)] = 0,
    follow: bool = True,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """Server-Sent Events: `id` is the event id (resume with `Last-Event-ID`), `event` its
    type, `data` the envelope. A new stream starts at the end (announcing, as a frame with an
    id and no data, the newest event's id to resume after), or `last` events back;
    `follow=false` sends what there is and closes."""
    org_id = policy.stream_scope(ctx.actor, org)
    async with runtime.database.read_only() as session:
        if org_id is not None:
            await policy.require_org(session, org_id)
        patterns = list(type or [])
        start, position = await streams.start_after(
            session, org_id, patterns, last_event_id or after, last
        )
    request = streams.StreamRequest(org_id, patterns, start, follow)

    async def frames() -> AsyncIterator[dict[str, Any]]:
        if position is not None:  # an id without data: where to resume (no event is shown)
            yield {"id": position}
        prefix = runtime.settings.bus_subjects_prefix
        async for event in streams.events(runtime.database, runtime.bus, request, prefix):
            yield {"id": event["id"], "event": event["type"], "data": json.dumps(event)}

    return EventSourceResponse(frames(), ping=_PING_SECONDS, send_timeout=30)


# Webhook subscriptions -------------------------------------------------------------------------


@router.post("/orgs/{org_id}/webhooks", response_model=SubscriptionCreated, status_code=201)
async def create_webhook(
    org_id: str, body: SubscriptionCreate, runtime: RuntimeDep, ctx: ContextDep
) -> SubscriptionCreated:
    """A subscription; its signing secret (`whsec_…`) is in this response only."""
    policy.require_webhook_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        subscription, secret = await subscriptions.create_subscription(
            session, ctx, runtime.keystore, runtime.settings, org_id, body
        )
    out = SubscriptionOut.model_validate(subscription)
    return SubscriptionCreated(**out.model_dump(), secret=secret)


@router.get("/orgs/{org_id}/webhooks", response_model=list[SubscriptionOut])
async def list_webhooks(org_id: str, runtime: RuntimeDep, ctx: ContextDep) -> list[SubscriptionOut]:
    policy.require_webhook_management(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        rows = await subscriptions.list_subscriptions(session, org_id)
    return [SubscriptionOut.model_validate(row) for row in rows]


@router.get(_WEBHOOK, response_model=SubscriptionOut)
async def get_webhook(
    org_id: str, subscription_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> SubscriptionOut:
    policy.require_webhook_management(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        row = await subscriptions.get_subscription(session, org_id, subscription_id)
    return SubscriptionOut.model_validate(row)


@router.patch(_WEBHOOK, response_model=SubscriptionOut)
async def update_webhook(
    org_id: str,
    subscription_id: str,
    body: SubscriptionUpdate,
    runtime: RuntimeDep,
    ctx: ContextDep,
) -> SubscriptionOut:
    """Change it; `active: true` resumes a paused subscription."""
    policy.require_webhook_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        row = await subscriptions.update_subscription(
            session, ctx, runtime.settings, org_id, subscription_id, body
        )
    return SubscriptionOut.model_validate(row)


@router.delete(_WEBHOOK, status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(
    org_id: str, subscription_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> Response:
    policy.require_webhook_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        await subscriptions.delete_subscription(session, ctx, org_id, subscription_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(_WEBHOOK + "/rotate-secret", response_model=SubscriptionCreated)
async def rotate_webhook_secret(
    org_id: str,
    subscription_id: str,
    body: SecretRotation,
    runtime: RuntimeDep,
    ctx: ContextDep,
) -> SubscriptionCreated:
    """A new secret (in this response only); the old one signs too during the grace period."""
    policy.require_webhook_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        row, secret = await subscriptions.rotate_secret(
            session, ctx, runtime.keystore, org_id, subscription_id, body
        )
    return SubscriptionCreated(**SubscriptionOut.model_validate(row).model_dump(), secret=secret)


@router.post(_WEBHOOK + "/test", response_model=DeliveryOut, status_code=202)
async def test_webhook(
    org_id: str, subscription_id: str, request: Request, runtime: RuntimeDep, ctx: ContextDep
) -> DeliveryOut:
    """Send a `webhook.test` event to this subscription (delivered like any other)."""
    policy.require_webhook_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        delivery = await deliveries.send_test(session, ctx, org_id, subscription_id)
    await _events(request).send_due()
    return _delivery_out(delivery, [])


@router.get(_WEBHOOK + "/deliveries", response_model=Page[DeliveryOut])
async def list_webhook_deliveries(
    org_id: str,
    subscription_id: str,
    runtime: RuntimeDep,
    ctx: ContextDep,
    status: DeliveryStatus | None = None,
    cursor: str | None = None,
    limit: Limit = DEFAULT_LIMIT,
) -> Page[DeliveryOut]:
    """Newest first, each with its attempts and the receiver's answers; `status=dead` lists
    the dead letters."""
    policy.require_webhook_management(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        rows, next_cursor = await deliveries.list_deliveries(
            session, org_id, subscription_id, status=status, cursor=cursor, limit=limit
        )
        attempts = await deliveries.attempts_of(session, [row.id for row in rows])
    items = [_delivery_out(row, attempts.get(row.id, [])) for row in rows]
    return Page[DeliveryOut](items=items, next_cursor=next_cursor)


@router.get(_WEBHOOK + "/deliveries/{delivery_id}", response_model=DeliveryOut)
async def get_webhook_delivery(
    org_id: str, subscription_id: str, delivery_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> DeliveryOut:
    policy.require_webhook_management(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        row = await deliveries.get_delivery(session, org_id, subscription_id, delivery_id)
        attempts = await deliveries.attempts_of(session, [row.id])
    return _delivery_out(row, attempts.get(row.id, []))


@router.post(_WEBHOOK + "/deliveries/{delivery_id}/replay", response_model=Replayed)
async def replay_webhook_delivery(
    org_id: str, subscription_id: str, delivery_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> Replayed:
    """Send a dead delivery again, with a fresh round of attempts."""
    policy.require_webhook_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        count = await deliveries.replay(session, ctx, org_id, subscription_id, delivery_id)
    return Replayed(replayed=count)


@router.post(_WEBHOOK + "/replay", response_model=Replayed)
async def replay_webhook_dead_letters(
    org_id: str, subscription_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> Replayed:
    """Send every dead delivery of the subscription again."""
    policy.require_webhook_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        count = await deliveries.replay(session, ctx, org_id, subscription_id)
    return Replayed(replayed=count)


def _delivery_out(row: WebhookDelivery, attempts: list[Any]) -> DeliveryOut:
    return DeliveryOut(
        id=row.id,
        subscription_id=row.subscription_id,
        event_id=row.event_id,
        event_type=row.event_type,
        status=DeliveryStatus(row.status),
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
        dead_at=row.dead_at,
        attempt_log=[AttemptOut.model_validate(attempt) for attempt in attempts],
    )


__all__ = ["router"]
