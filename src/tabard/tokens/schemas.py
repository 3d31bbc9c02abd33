"""Request and response shapes of the token service's REST routes (the OAuth endpoints speak
RFC 6749's form-encoded requests and JSON answers, shaped in `routes.py`)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class TokenSettingsUpdate(BaseModel):
    """Change an org's token policy; omitted fields keep their value, a null lifetime resets it."""

    model_config = ConfigDict(extra="forbid")

    access_token_lifetime_seconds: int | None = Field(default=None, ge=1)
    require_dpop: bool | None = None


class TokenSettingsOut(BaseModel):
    access_token_lifetime_seconds: int
    require_dpop: bool


class RevocationTarget(StrEnum):
    """What may be revoked by id. Orgs revoke single tokens by presenting them (RFC 7009); a bare
    `jti` names no tenant, so only the platform admin may revoke by it."""

    AGENT = "agent"
    CLIENT = "client"
    CHAIN = "chain"
    JTI = "jti"


class RevocationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: RevocationTarget
    value: str = Field(min_length=1, max_length=255)
    reason: str = Field(default="revoked_by_org", min_length=1, max_length=64)


class RevocationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: str
    value: str
    revoked_before: datetime
    expires_at: datetime
    reason: str
    created_at: datetime
