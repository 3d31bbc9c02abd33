"""Trust API shapes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tabard.pki.schemas import CaCreate, CaOut
from tabard.registry.schemas import Capability
from tabard.tenancy.schemas import ApiKeyCreated, Contact, DisplayName, OrgOut, OrgSlug

INVITE_MIN_TTL_SECONDS = 3600
INVITE_MAX_TTL_SECONDS = 365 * 86400


class BindingStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REVOKED = "revoked"


class BindingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: str
    scope: Annotated[list[Capability], Field(min_length=1, max_length=64)]
    note: Annotated[str, Field(max_length=500)] = ""


class BindingUpdate(BaseModel):
    """A new scope for a pending or revoked binding (approved ones are revoked first)."""

    model_config = ConfigDict(extra="forbid")

    scope: Annotated[list[Capability], Field(min_length=1, max_length=64)] | None = None
    note: Annotated[str, Field(max_length=500)] | None = None


class BindingOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    org_id: str
    agent_id: str
    scope: list[str]
    status: BindingStatus
    note: str
    created_at: datetime
    updated_at: datetime
    approved_at: datetime | None
    revoked_at: datetime | None


class TrustSettingsOut(BaseModel):
    binding_required: bool


class TrustSettingsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    binding_required: bool


class InviteKind(StrEnum):
    JOIN = "join"
    ATTACH = "attach"


class InviteStatus(StrEnum):
    ACTIVE = "active"
    USED = "used"
    EXPIRED = "expired"
    REVOKED = "revoked"


class InviteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: InviteKind
    org_id: OrgSlug | None = Field(default=None, description="The org to attach (attach only)")
    label: Annotated[str, Field(max_length=200)] = ""
    expires_in: Annotated[int, Field(ge=INVITE_MIN_TTL_SECONDS, le=INVITE_MAX_TTL_SECONDS)] = (
        7 * 86400
    )

    @model_validator(mode="after")
    def _org_for_attach_only(self) -> InviteCreate:
        if (self.kind is InviteKind.ATTACH) != (self.org_id is not None):
            raise ValueError("an attach invite names org_id; a join invite does not")
        return self


class InviteOut(BaseModel):
    """An invite as listed: never its secret."""

    id: str
    kind: InviteKind
    label: str
    org_id: str | None
    status: InviteStatus
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None


class InviteCreated(InviteOut):
    """The only response that shows the invite's secret."""

    invite: str


class InviteSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")

    invite: Annotated[str, Field(min_length=1, max_length=200)]


class InviteView(BaseModel):
    """What inspecting an invite tells its holder (it stays unused)."""

    kind: InviteKind
    label: str
    org_id: str | None
    expires_at: datetime


class JoiningOrg(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: OrgSlug
    display_name: DisplayName
    contact: Contact


class JoinRequest(InviteSecret):
    org: JoiningOrg
    ca: Annotated[CaCreate | None, Field(description="Optionally the org's CA")] = None


class AttachRequest(InviteSecret):
    ca: CaCreate


class Onboarded(BaseModel):
    """The org, its first API key (shown once; it works once the org is active) and its CA."""

    org: OrgOut
    api_key: ApiKeyCreated
    ca: CaOut | None
