"""Operations API shapes."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from tabard.pki.schemas import Pem
from tabard.registry.schemas import (
    AGENT_NAME_PATTERN,
    MAX_CAPABILITIES,
    MAX_TAGS,
    AgentName,
    Capabilities,
    Capability,
    Description,
    DisplayName,
    Tag,
    Tags,
    Version,
)

MIN_TOKEN_TTL_SECONDS = 60
MAX_TOKEN_TTL_SECONDS = 7 * 86400
MAX_STATUS_BYTES = 4 * 1024
MAX_OUTPUT_BYTES = 256 * 1024
ActionName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,99}$")]
InstanceId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]


class RegistrationTokenStatus(StrEnum):
    ACTIVE = "active"
    USED = "used"
    EXPIRED = "expired"
    REVOKED = "revoked"


class RegistrationPreset(BaseModel):
    """What an agent registering with the token gets, whatever it asks for."""

    model_config = ConfigDict(extra="forbid")

    agent_id: str | None = Field(default=None, description="Attach to this existing agent")
    name_pattern: Annotated[str, Field(pattern=r"^[a-z0-9*-]{1,63}$")] | None = Field(
        default=None, description="Agent names must match (`*` is any run of a-z 0-9 -)"
    )
    capabilities: Annotated[list[Capability], Field(max_length=MAX_CAPABILITIES)] | None = None
    tags: Annotated[list[Tag], Field(max_length=MAX_TAGS)] | None = None

    @field_validator("name_pattern")
    @classmethod
    def _pattern_makes_names(cls, value: str | None) -> str | None:
        """A pattern must be able to make an agent name (no leading or trailing `-`, room for
        what `*` becomes)."""
        if value is not None:
            example = value.replace("*", "a" * 8)
            if len(example) > 63 or not re.fullmatch(AGENT_NAME_PATTERN, example):
                raise ValueError(f"{value!r} cannot make an agent name ({AGENT_NAME_PATTERN})")
        return value


class RegistrationTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expires_in: Annotated[int, Field(ge=MIN_TOKEN_TTL_SECONDS, le=MAX_TOKEN_TTL_SECONDS)] = 3600
    label: Annotated[str, Field(max_length=200)] = ""
    preset: RegistrationPreset = Field(default_factory=RegistrationPreset)


class RegistrationTokenOut(BaseModel):
    id: str
    org_id: str
    label: str
    prefix: str
    preset: RegistrationPreset
    status: RegistrationTokenStatus
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by_agent_id: str | None
    revoked_at: datetime | None


class RegistrationTokenCreated(RegistrationTokenOut):
    """The only response that shows the token."""

    token: str


class Registration(BaseModel):
    """What an agent process sends with its registration token."""

    model_config = ConfigDict(extra="forbid")

    name: AgentName | None = Field(default=None, description="Default: from the preset")
    display_name: DisplayName | None = None
    description: Description = ""
    version: Version = "0.1.0"
    capabilities: Capabilities | None = None
    tags: Tags = Field(default_factory=list)
    credential: Literal["client_secret", "certificate"] = "client_secret"
    csr_pem: Pem | None = Field(default=None, description="For a certificate credential")


class Registered(BaseModel):
    """The agent and its credentials: shown once."""

    agent_id: str
    org_id: str
    agent_name: str
    issuer: str
    token_endpoint: str
    client_id: str
    client_secret: str | None = None
    certificate_pem: str | None = None
    chain_pem: str | None = None
    spiffe_id: str | None = None


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instance_id: InstanceId
    hostname: Annotated[str, Field(max_length=255)] = ""
    version: Annotated[str, Field(max_length=100)] = ""
    sdk_version: Annotated[str, Field(max_length=100)] = ""
    status: dict[str, Any] = Field(default_factory=dict, description="Free-form, at most 4 KB")
    clock: AwareDatetime | None = Field(
        default=None, description="The agent's own time, with its offset (drift)"
    )


class HeartbeatAck(BaseModel):
    server_time: datetime
    clock_skew_seconds: float | None


class Presence(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    NEVER_SEEN = "never_seen"


class InstanceOut(BaseModel):
    instance_id: str
    hostname: str
    version: str
    sdk_version: str
    status: dict[str, Any]
    presence: Presence
    first_seen_at: datetime
    last_seen_at: datetime
    clock_skew_seconds: float
    clock_skewed: bool


class AgentStatusOut(BaseModel):
    agent_id: str
    lifecycle: str
    presence: Presence
    last_seen_at: datetime | None
    online_instances: int
    instances: list[InstanceOut]


class ActionDeclaration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ActionName
    description: Annotated[str, Field(max_length=2000)] = ""
    params_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    dangerous: bool = False
    requires_prepare: bool = False


class ActionsDeclaration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actions: Annotated[list[ActionDeclaration], Field(max_length=200)]


class ActionOut(ActionDeclaration):
    model_config = ConfigDict(from_attributes=True)

    declared_at: datetime


class CommandType(StrEnum):
    ACTION_EXECUTE = "ACTION_EXECUTE"
    ACTION_PREPARE = "ACTION_PREPARE"


class CommandState(StrEnum):
    PENDING = "PENDING"
    DISPATCHED = "DISPATCHED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"


TERMINAL_STATES = frozenset(
    {CommandState.SUCCEEDED, CommandState.FAILED, CommandState.EXPIRED, CommandState.CANCELLED}
)


class CommandCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: CommandType = CommandType.ACTION_EXECUTE
    action: ActionName
    params: dict[str, Any] = Field(default_factory=dict)
    instance_id: InstanceId | None = Field(default=None, description="One instance only")
    all_instances: bool = Field(default=False, description="One command per online instance")
    expires_in: Annotated[int, Field(ge=5, le=7 * 86400)] = 600
    idempotency_key: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    prepare_command_id: str | None = Field(
        default=None, description="A succeeded ACTION_PREPARE of the same action and params"
    )
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 1
    lease_seconds: Annotated[int, Field(ge=5, le=3600)] = 60

    @model_validator(mode="after")
    def _one_target(self) -> CommandCreate:
        if self.all_instances and self.instance_id is not None:
            raise ValueError("send instance_id or all_instances, not both")
        return self


class CommandError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Annotated[str, Field(min_length=1, max_length=100)]
    message: Annotated[str, Field(max_length=4000)] = ""


class CommandProgress(BaseModel):
    """An instance says it has started (or is still running) a command it holds."""

    model_config = ConfigDict(extra="forbid")

    instance_id: InstanceId


class CommandResult(BaseModel):
    """What an instance reports when a command is done."""

    model_config = ConfigDict(extra="forbid")

    instance_id: InstanceId
    status: Literal["SUCCEEDED", "FAILED"]
    output: Any = None
    error: CommandError | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class CommandOut(BaseModel):
    id: str
    org_id: str
    agent_id: str
    instance_id: str | None
    type: CommandType
    action: str
    params: dict[str, Any]
    state: CommandState
    idempotency_key: str | None
    prepare_command_id: str | None
    retry_of: str | None
    attempts: int
    max_attempts: int
    leased_to: str | None
    created_by: str
    created_at: datetime
    expires_at: datetime
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    output: Any
    error: CommandError | None
