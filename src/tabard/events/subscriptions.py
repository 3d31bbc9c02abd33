"""Webhook subscriptions: where an org wants its events, which ones, and the secret they are
signed with (shown once; sealed with the master key, since Tabard must read it to sign).

Rotating the secret keeps the previous one signing too for a grace period, so receivers can
switch without missing a delivery. A subscription that fails continuously is paused; updating
it with `active: true` resumes it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit import service as audit
from tabard.core.config import Settings
from tabard.core.context import Context
from tabard.core.ids import new_id
from tabard.core.keystore import KeyStore
from tabard.events import catalogue, egress, signing
from tabard.events.errors import (
    InvalidWebhookUrl,
    SubscriptionLimitReached,
    SubscriptionNotFound,
    UnknownEventType,
)
from tabard.events.models import WebhookSubscription
from tabard.events.schemas import SecretRotation, SubscriptionCreate, SubscriptionUpdate
from tabard.tenancy import service as tenancy


async def create_subscription(
    session: AsyncSession,
    ctx: Context,
    keystore: KeyStore,
    settings: Settings,
    org_id: str,
    data: SubscriptionCreate,
) -> tuple[WebhookSubscription, str]:
    """A new subscription and its secret (returned once)."""
    await tenancy.get_org(session, org_id)
    _check(data.url, data.event_types, settings)
    await _check_room(session, org_id, settings.webhook_max_subscriptions_per_org)
    secret = signing.new_secret()
    now = ctx.clock.now()
    subscription = WebhookSubscription(
        id=new_id(),
        org_id=org_id,
        url=data.url,
        description=data.description,
        event_types=list(dict.fromkeys(data.event_types)),
        active=data.active,
        sealed_secret=b"",
        consecutive_failures=0,
        created_at=now,
        updated_at=now,
    )
    subscription.sealed_secret = _seal(keystore, subscription.id, secret)
    session.add(subscription)
    await _changed(session, ctx, "webhook.created", subscription)
    return subscription, secret


async def list_subscriptions(session: AsyncSession, org_id: str) -> list[WebhookSubscription]:
    await tenancy.get_org(session, org_id)
    statement = (
        select(WebhookSubscription)
        .where(WebhookSubscription.org_id == org_id)
        .order_by(WebhookSubscription.id)
    )
    return list((await session.execute(statement)).scalars())


async def get_subscription(
    session: AsyncSession, org_id: str, subscription_id: str
) -> WebhookSubscription:
    statement = select(WebhookSubscription).where(
        WebhookSubscription.id == subscription_id, WebhookSubscription.org_id == org_id
    )
    subscription = (await session.execute(statement)).scalar_one_or_none()
    if subscription is None:
        raise SubscriptionNotFound(f"no webhook subscription {subscription_id!r}")
    return subscription


async def update_subscription(
    session: AsyncSession,
    ctx: Context,
    settings: Settings,
    org_id: str,
    subscription_id: str,
    data: SubscriptionUpdate,
) -> WebhookSubscription:
    subscription = await get_subscription(session, org_id, subscription_id)
    _check(data.url or subscription.url, data.event_types or subscription.event_types, settings)
    if data.url is not None:
        subscription.url = data.url
    if data.event_types is not None:
        subscription.event_types = list(dict.fromkeys(data.event_types))
    if data.description is not None:
        subscription.description = data.description
    if data.active is not None:
        subscription.active = data.active
        if data.active:  # resumed: it gets a fresh count before it is paused again
            subscription.paused_at, subscription.consecutive_failures = None, 0
    subscription.updated_at = ctx.clock.now()
    await _changed(session, ctx, "webhook.updated", subscription)
    return subscription


async def delete_subscription(
    session: AsyncSession, ctx: Context, org_id: str, subscription_id: str
) -> None:
    subscription = await get_subscription(session, org_id, subscription_id)
    # Deleted (locked) before the audit event takes the org's chain head: the order in which
    # recording an attempt that pauses a subscription takes them.
    await session.delete(subscription)
    await session.flush()
    await _changed(session, ctx, "webhook.deleted", subscription)


async def rotate_secret(
    session: AsyncSession,
    ctx: Context,
    keystore: KeyStore,
    org_id: str,
    subscription_id: str,
    data: SecretRotation,
) -> tuple[WebhookSubscription, str]:
    """A new secret (returned once); the previous one signs too for the grace period."""
    subscription = await get_subscription(session, org_id, subscription_id)
    secret = signing.new_secret()
    now = ctx.clock.now()
    if data.grace_period_seconds:
        subscription.sealed_previous_secret = subscription.sealed_secret
        subscription.previous_secret_expires_at = now + timedelta(seconds=data.grace_period_seconds)
    else:
        subscription.sealed_previous_secret = None
        subscription.previous_secret_expires_at = None
    subscription.sealed_secret = _seal(keystore, subscription.id, secret)
    subscription.updated_at = now
    await _changed(
        session,
        ctx,
        "webhook.secret_rotated",
        subscription,
        grace_period_seconds=data.grace_period_seconds,
    )
    return subscription, secret


def signing_secrets(
    keystore: KeyStore, subscription: WebhookSubscription, now: datetime
) -> list[str]:
    """The secrets to sign with now: the current one, and the previous during its grace."""
    secrets = [_open(keystore, subscription.id, subscription.sealed_secret)]
    previous = subscription.sealed_previous_secret
    expires = subscription.previous_secret_expires_at
    if previous is not None and expires is not None and now < expires:
        secrets.append(_open(keystore, subscription.id, previous))
    return secrets


def _check(url: str, event_types: list[str], settings: Settings) -> None:
    try:
        egress.check_url(url, settings)
    except egress.EgressRefused as exc:
        raise InvalidWebhookUrl(str(exc)) from None
    unknown = [pattern for pattern in event_types if not catalogue.known_pattern(pattern)]
    if unknown:
        raise UnknownEventType(
            f"no event type matches {', '.join(unknown)} (see GET /v1/event-types)",
            unknown=unknown,
        )


async def _check_room(session: AsyncSession, org_id: str, limit: int) -> None:
    """Refuse a subscription past the org's limit; every event is matched against each one."""
    statement = select(func.count()).where(WebhookSubscription.org_id == org_id)
    if int((await session.execute(statement)).scalar_one()) >= limit:
        raise SubscriptionLimitReached(f"an organization may have {limit} webhook subscriptions")


def _seal(keystore: KeyStore, subscription_id: str, secret: str) -> bytes:
    return keystore.encrypt(secret.encode(), _binding(subscription_id))


def _open(keystore: KeyStore, subscription_id: str, sealed: bytes) -> str:
    return keystore.decrypt(sealed, _binding(subscription_id)).decode()


def _binding(subscription_id: str) -> bytes:
    return f"tabard-webhook-secret:{subscription_id}".encode()


async def _changed(
    session: AsyncSession,
    ctx: Context,
    action: str,
    subscription: WebhookSubscription,
    **data: Any,
) -> None:
    details = {
        "subscription_id": subscription.id,
        "url": subscription.url,
        "event_types": list(subscription.event_types),
        "active": subscription.active,
        **data,
    }
    await audit.record(
        session,
        ctx,
        action=action,
        org_id=subscription.org_id,
        target=subscription.id,
        details=details,
    )
    # Audited, not announced: webhooks about webhook settings would only echo the caller.
