"""The event envelope every consumer sees (webhooks, streams, the bus), and its subjects."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from tabard.core.outbox import OutboxEvent

STREAM_PREFIX = "tabard"  # the default of TABARD_BUS_SUBJECTS_PREFIX
PLATFORM = "_platform"  # the subject token of events that belong to no org


def subject_of(org_id: str | None, event_type: str, prefix: str = STREAM_PREFIX) -> str:
    return f"{prefix}.{org_id or PLATFORM}.{event_type}"


def published_subject(prefix: str = STREAM_PREFIX) -> str:
    """A plain (never stored) message after the relay numbered events: streams look again."""
    return f"{prefix}-events.published"


def envelope(row: OutboxEvent) -> dict[str, Any]:
    return {
        "id": row.id,
        "type": row.type,
        "org": row.org_id,
        "time": iso(row.occurred_at),
        "subject": row.subject,
        "data": row.data,
    }


def encode(event: dict[str, Any]) -> bytes:
    """Compact, sorted JSON: the bytes a webhook signature covers."""
    return json.dumps(event, separators=(",", ":"), sort_keys=True).encode()


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
