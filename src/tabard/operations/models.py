"""Operations tables: registration tokens, agent instances (heartbeats), presence transitions,
declared actions and commands."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from tabard.core.db import Base, UTCDateTime


class RegistrationToken(Base):
    """A single-use token an agent process registers with; stored as a keyed digest.

    `preset` may fix what the registering process gets: an `agent_id` to attach to, an agent
    name pattern, capabilities, tags.
    """

    __tablename__ = "registration_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    label: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    preset: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    used_by_agent_id: Mapped[str | None] = mapped_column(String(36))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AgentInstance(Base):
    """One process of an agent, as its heartbeats describe it (flushed in batches)."""

    __tablename__ = "agent_instances"

    agent_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(63))
    hostname: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(100))
    sdk_version: Mapped[str] = mapped_column(String(100))
    status_data: Mapped[dict[str, Any]] = mapped_column(JSON)
    clock_skew_seconds: Mapped[float] = mapped_column(Float)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeats: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        ForeignKeyConstraint(
            ["agent_id", "org_id"], ["agents.id", "agents.org_id"], ondelete="CASCADE"
        ),
        Index("ix_agent_instances_org_id_last_seen_at", "org_id", "last_seen_at"),
    )


class AgentPresence(Base):
    """The last online/offline state the maintenance job announced for an agent."""

    __tablename__ = "agent_presence"

    agent_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    org_id: Mapped[str] = mapped_column(String(63))
    state: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AgentAction(Base):
    """An action an agent declares it can run, with the JSON Schema of its parameters."""

    __tablename__ = "agent_actions"

    agent_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(Text)
    params_schema: Mapped[dict[str, Any]] = mapped_column(JSON)
    dangerous: Mapped[bool] = mapped_column(Boolean)
    requires_prepare: Mapped[bool] = mapped_column(Boolean)
    declared_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        ForeignKeyConstraint(
            ["agent_id", "org_id"], ["agents.id", "agents.org_id"], ondelete="CASCADE"
        ),
    )


class Command(Base):
    """An operator's request that an agent (one instance) run or dry-run an action.

    Leased to one instance at a time (`leased_to`, `lease_expires_at`); a lapsed lease offers it
    again while `attempts` < `max_attempts`, then fails it. Output secrets are never stored:
    they are replaced by "[REDACTED]" and kept only in the kv store for one read.
    """

    __tablename__ = "commands"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(63))
    agent_id: Mapped[str] = mapped_column(String(36))
    instance_id: Mapped[str | None] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(100))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    prepare_command_id: Mapped[str | None] = mapped_column(String(36))
    retry_of: Mapped[str | None] = mapped_column(String(36))
    max_attempts: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer)
    lease_seconds: Mapped[int] = mapped_column(Integer)
    leased_to: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    output: Mapped[Any | None] = mapped_column(JSON)
    has_secrets: Mapped[bool] = mapped_column(Boolean)
    error_code: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        ForeignKeyConstraint(
            ["agent_id", "org_id"], ["agents.id", "agents.org_id"], ondelete="CASCADE"
        ),
        UniqueConstraint(
            "agent_id", "idempotency_key", name="uq_commands_agent_id_idempotency_key"
        ),
        Index("ix_commands_agent_id_state", "agent_id", "state"),
        Index("ix_commands_state_expires_at", "state", "expires_at"),
    )
