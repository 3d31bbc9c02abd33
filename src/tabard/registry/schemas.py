"""Registry API shapes: agents, their keys, discovery queries."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import semver
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from tabard.core.pagination import DEFAULT_LIMIT, MAX_LIMIT

MAX_CAPABILITIES = 64
MAX_TAGS = 32
MAX_METADATA_BYTES = 16 * 1024
AGENT_NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
# Dotted or colon-separated segments: `message.exchange`, `invoices:read`, `crm.contacts:write`.
CAPABILITY_PATTERN = r"^[a-z0-9][a-z0-9_-]*(?:[.:][a-z0-9][a-z0-9_-]*)*$"
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
TYPE_PATTERN = r"^[a-z][a-z0-9_-]*$"
SUGGESTED_TYPES = ("orchestrator", "worker", "router", "monitor", "tool", "custom")


class AgentStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DECOMMISSIONED = "decommissioned"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"


class Visibility(StrEnum):
    PRIVATE = "private"
    PUBLIC = "public"


class KeyAlgorithm(StrEnum):
    """Key types an agent may hold; named as JOSE curves (RFC 8037, RFC 7518)."""

    ED25519 = "Ed25519"
    P256 = "P-256"


def _semver(value: str) -> str:
    if not semver.Version.is_valid(value):
        raise ValueError(f"{value!r} is not a semantic version (MAJOR.MINOR.PATCH, semver.org)")
    return value


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _small_json(value: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {size} bytes; the limit is {MAX_METADATA_BYTES}")
    return value


_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)


def _http_url(value: str) -> str:
    """Validated as an http(s) URL, kept as the string it normalizes to."""
    try:
        return str(_HTTP_URL.validate_python(value))
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"]) from None


AgentName = Annotated[str, Field(pattern=AGENT_NAME_PATTERN, examples=["invoice-bot"])]
Capability = Annotated[str, Field(min_length=1, max_length=100, pattern=CAPABILITY_PATTERN)]
Tag = Annotated[str, Field(min_length=1, max_length=64, pattern=TAG_PATTERN)]
Capabilities = Annotated[
    list[Capability], Field(max_length=MAX_CAPABILITIES), AfterValidator(_unique)
]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS), AfterValidator(_unique)]
AgentType = Annotated[
    str,
    Field(
        max_length=32,
        pattern=TYPE_PATTERN,
        description=f"Free text; suggested: {', '.join(SUGGESTED_TYPES)}.",
        examples=list(SUGGESTED_TYPES),
    ),
]
Version = Annotated[str, Field(max_length=100, examples=["1.4.0"]), AfterValidator(_semver)]
EndpointUrl = Annotated[
    str, Field(max_length=2048, json_schema_extra={"format": "uri"}), AfterValidator(_http_url)
]
Metadata = Annotated[dict[str, Any], AfterValidator(_small_json)]
DisplayName = Annotated[str, Field(min_length=1, max_length=200)]
Description = Annotated[str, Field(max_length=4000)]


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: AgentName
    display_name: DisplayName | None = None
    description: Description = ""
    type: AgentType = "custom"
    version: Version = "0.1.0"
    capabilities: Capabilities = Field(default_factory=list)
    tags: Tags = Field(default_factory=list)
    environment: Environment = Environment.DEVELOPMENT
    endpoint_url: EndpointUrl | None = None
    visibility: Visibility = Visibility.PRIVATE
    metadata: Metadata = Field(default_factory=dict)


class AgentUpdate(BaseModel):
    """PATCH: only the fields sent change; `name` is fixed for the agent's life."""

    model_config = ConfigDict(extra="forbid")

    display_name: DisplayName | None = None
    description: Description | None = None
    type: AgentType | None = None
    version: Version | None = None
    capabilities: Capabilities | None = None
    tags: Tags | None = None
    environment: Environment | None = None
    endpoint_url: EndpointUrl | None = None
    visibility: Visibility | None = None
    metadata: Metadata | None = None

    @field_validator(
        "display_name",
        "description",
        "type",
        "version",
        "capabilities",
        "tags",
        "environment",
        "visibility",
        "metadata",
    )
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        """Only `endpoint_url` may be cleared with null; the others are always set."""
        if value is None:
            raise ValueError("may not be null; omit the field to leave it unchanged")
        return value


class AgentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    org_id: str
    name: str
    display_name: str
    description: str
    type: str
    version: str
    capabilities: list[str]
    tags: list[str]
    environment: Environment
    endpoint_url: str | None
    visibility: Visibility
    metadata: dict[str, Any] = Field(validation_alias="metadata_")
    status: AgentStatus
    did: str
    created_at: datetime
    updated_at: datetime


class AgentFilters(BaseModel):
    """Filters of an org's agent list; every given filter must match."""

    model_config = ConfigDict(extra="forbid")

    status: AgentStatus | None = None
    type: str | None = None
    tag: str | None = None
    capability: list[str] = Field(default_factory=list)
    environment: Environment | None = None
    cursor: str | None = None
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)


class DiscoveryQuery(AgentFilters):
    """A search across the registry: public agents of every org and all of the caller's own."""

    org: str | None = None
    q: str | None = Field(default=None, min_length=1, max_length=200)


class AgentKeyCreate(BaseModel):
    """Register a public JWK, or ask the registry to generate a key pair (`generate`)."""

    model_config = ConfigDict(extra="forbid")

    jwk: dict[str, Any] | None = None
    generate: KeyAlgorithm | None = None


class AgentKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kid: str
    agent_id: str
    algorithm: KeyAlgorithm
    public_jwk: dict[str, Any]
    did_key: str
    created_at: datetime
    revoked_at: datetime | None


class AgentKeyGenerated(AgentKeyOut):
    """The response to `generate`: the only time the private key is shown. Tabard keeps no copy."""

    private_jwk: dict[str, Any]
