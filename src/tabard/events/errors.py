"""Events errors."""

from __future__ import annotations

from tabard.core.errors import BadRequest, Conflict, NotFound


class SubscriptionNotFound(NotFound):
    code = "WEBHOOK_SUBSCRIPTION_NOT_FOUND"
    title = "Webhook subscription not found"


class DeliveryNotFound(NotFound):
    code = "WEBHOOK_DELIVERY_NOT_FOUND"
    title = "Webhook delivery not found"


class InvalidWebhookUrl(BadRequest):
    """The URL can never be called under this deployment's policy; `detail` says why."""

    code = "INVALID_WEBHOOK_URL"
    title = "Webhook URL not allowed"


class UnknownEventType(BadRequest):
    code = "UNKNOWN_EVENT_TYPE"
    title = "No event type matches"


class DeliveryNotReplayable(Conflict):
    code = "WEBHOOK_DELIVERY_NOT_REPLAYABLE"
    title = "Only dead deliveries can be replayed"


class InvalidLastEventId(BadRequest):
    code = "INVALID_LAST_EVENT_ID"
    title = "Unknown Last-Event-ID"


class SubscriptionLimitReached(Conflict):
    code = "WEBHOOK_SUBSCRIPTION_LIMIT_REACHED"
    title = "The organization has as many webhook subscriptions as allowed"
