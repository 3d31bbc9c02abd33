"""Events API shapes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

EventPattern = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^(\*|[a-z_]+(\.[a-z_]+)*(\.\*)?)$")
]
MAX_GRACE_SECONDS = 7 * 86400


class SubscriptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(min_length=1, max_length=2048)]
    event_types: Annotated[list[EventPattern], Field(min_length=1, max_length=100)] = Field(
        description="Exact types, `agent.*` for a family, or `*` for every event"
    )
    description: Annotated[str, Field(max_length=500)] = ""
    active: bool = True


class SubscriptionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    event_types: Annotated[list[EventPattern], Field(min_length=1, max_length=100)] | None = None
    description: Annotated[str, Field(max_length=500)] | None = None
    active: bool | None = Field(default=None, description="true resumes a paused subscription")


class SubscriptionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    org_id: str
    url: str
    description: str
    event_types: list[str]
    active: bool
    paused_at: datetime | None
    consecutive_failures: int
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class SubscriptionCreated(SubscriptionOut):
    """The only response that shows the signing secret."""

    secret: str


class SecretRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_period_seconds: Annotated[int, Field(ge=0, le=MAX_GRACE_SECONDS)] = Field(
        default=86400, description="How long the previous secret keeps signing too"
    )


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    DEAD = "dead"


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    number: int
    attempted_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None


class DeliveryOut(BaseModel):
    id: str
    subscription_id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    dead_at: datetime | None
    attempt_log: list[AttemptOut] = Field(default_factory=list)


class Replayed(BaseModel):
    replayed: int


class EventOut(BaseModel):
    """The envelope every consumer sees."""

    id: str
    type: str
    org: str | None
    time: str
    subject: str | None
    data: dict[str, Any]


class EventTypeOut(BaseModel):
    type: str
    description: str
    data_schema: dict[str, Any]
