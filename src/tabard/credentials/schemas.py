"""Credentials API shapes. Secrets appear only in `CredentialCreated` (creation and rotation)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from tabard.registry.schemas import Capability

MAX_GRACE_SECONDS = 24 * 3600
MAX_JWKS_KEYS = 10
CredentialScope = Annotated[list[Capability], Field(min_length=1, max_length=64)]


class AuthMethod(StrEnum):
    """How the client proves itself at the token endpoint (RFC 7591 names, grouped)."""

    CLIENT_SECRET = "client_secret"  # noqa: S105 - a method name, not a secret
    PRIVATE_KEY_JWT = "private_key_jwt"


class CredentialStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class JsonWebKeySet(BaseModel):
    keys: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_JWKS_KEYS)]


class CredentialCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=100)] = "default"
    auth_method: AuthMethod = AuthMethod.CLIENT_SECRET
    expires_in: Annotated[int | None, Field(ge=60, le=10 * 365 * 86400)] = Field(
        default=None, description="Lifetime in seconds; no expiry when omitted."
    )
    jwks: JsonWebKeySet | None = Field(default=None, description="private_key_jwt: the keys.")
    jwks_uri: Annotated[
        HttpUrl | None, Field(description="private_key_jwt: where the keys are.")
    ] = None
    scope: CredentialScope | None = Field(
        default=None,
        description="The most tokens of this credential may carry (within the agent's "
        "capabilities); omitted: all of them.",
    )


class CredentialUpdate(BaseModel):
    """Rename, or replace the registered keys of a `private_key_jwt` credential."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str | None, Field(min_length=1, max_length=100)] = None
    jwks: JsonWebKeySet | None = None
    jwks_uri: HttpUrl | None = None
    scope: CredentialScope | None = Field(
        default=None, description="A new allowed scope; null lifts the limit."
    )


class CredentialRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_period_seconds: Annotated[int, Field(ge=0, le=MAX_GRACE_SECONDS)] = Field(
        default=0,
        description="How long the previous secret keeps working (at most 24 h); 0 ends it at once.",
    )


class CredentialOut(BaseModel):
    """A credential as listed: never a secret or a digest."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    agent_id: str
    org_id: str
    client_id: str
    name: str
    auth_method: AuthMethod
    status: CredentialStatus
    secret_prefix: str | None
    previous_secret_expires_at: datetime | None
    jwks: dict[str, Any] | None
    jwks_uri: str | None
    scope: list[str] | None = None
    expires_at: datetime | None
    created_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class CredentialCreated(CredentialOut):
    """The response to creating or rotating a secret credential: the only time it is shown."""

    client_secret: str | None
