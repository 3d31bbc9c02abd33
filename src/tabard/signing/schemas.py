"""Signing-key API shapes. Nothing here ever carries private key material."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SigningKeyStatus(StrEnum):
    """`active` signs (exactly one); `retired` is published until `publish_until` but no longer
    signs; `revoked` has left the JWKS for good."""

    ACTIVE = "active"
    RETIRED = "retired"
    REVOKED = "revoked"


class RotateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algorithm: Literal["ES256", "Ed25519", "EdDSA", "RS256"] | None = Field(
        default=None,
        description="Algorithm of the new key (EdDSA means Ed25519, RFC 9864); "
        "default: TABARD_SIGNING_ALGORITHM.",
    )
    revoke_previous: bool = Field(
        default=False,
        description="Emergency: every previous key leaves the JWKS now and its tokens stop "
        "verifying, instead of staying published until they expire.",
    )


class SigningKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kid: str
    alg: str
    status: SigningKeyStatus
    created_at: datetime
    retired_at: datetime | None
    publish_until: datetime | None
    revoked_at: datetime | None


class RotationOut(BaseModel):
    key: SigningKeyOut = Field(description="The new active key.")
    previous_kid: str | None = Field(description="The key it replaced, if any.")
    previous_publish_until: datetime | None = Field(
        description="When the replaced key leaves the JWKS (null when it was revoked)."
    )
    revoked_kids: list[str] = Field(description="Keys revoked by this rotation.")
