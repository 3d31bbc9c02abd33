"""Tenancy API shapes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

ORG_SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"

OrgSlug = Annotated[str, Field(pattern=ORG_SLUG_PATTERN, examples=["acme"])]
DisplayName = Annotated[str, Field(min_length=1, max_length=200)]


class OrgStatus(StrEnum):
    """`pending → active | rejected` (onboarding by invite), then `active ⇄ suspended`.

    Only an active org authenticates: its keys work and its agents may log in.
    """

    PENDING = "pending"
    ACTIVE = "active"
    REJECTED = "rejected"
    SUSPENDED = "suspended"


class Tier(StrEnum):
    FREE = "free"
    PRO = "pro"
    ENTERPRISE = "enterprise"


class Contact(BaseModel):
    """Who to reach at the organization (given when it applies to join)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: Annotated[
        str, Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    ]


class OrgCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: OrgSlug
    display_name: DisplayName
    tier: Tier = Tier.FREE
    contact: Contact | None = None


class OrgUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: DisplayName | None = None
    tier: Tier | None = None


class OrgOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    display_name: str
    status: OrgStatus
    tier: Tier
    contact: Contact | None = None
    created_at: datetime
    updated_at: datetime


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=100)]
    expires_in: Annotated[int | None, Field(ge=60, le=10 * 365 * 86400)] = Field(
        default=None, description="Lifetime in seconds; no expiry when omitted."
    )


class ApiKeyOut(BaseModel):
    """An API key as listed: never the secret."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    org_id: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    """The response to creating a key: the only time `secret` is shown."""

    secret: str


class PrincipalOut(BaseModel):
    kind: str
    id: str | None
    org_id: str | None
