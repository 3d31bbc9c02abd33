"""Registry tables: agents, the lookup tables discovery searches, and agents' public keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, ForeignKeyConstraint, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tabard.core.db import Base, UTCDateTime


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("organizations.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(63))
    display_name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(32))
    version: Mapped[str] = mapped_column(String(100))
    capabilities: Mapped[list[str]] = mapped_column(JSON)
    tags: Mapped[list[str]] = mapped_column(JSON)
    environment: Mapped[str] = mapped_column(String(16))
    endpoint_url: Mapped[str | None] = mapped_column(String(2048))
    visibility: Mapped[str] = mapped_column(String(16))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    status: Mapped[str] = mapped_column(String(16))
    did: Mapped[str] = mapped_column(String(300), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        # Names stay reserved after decommissioning: the constraint covers every status.
        UniqueConstraint("org_id", "name", name="uq_agents_org_id_name"),
        # Lets other tables refer to (agent, org) together, so a row can never cross tenants.
        UniqueConstraint("id", "org_id", name="uq_agents_id_org_id"),
        Index("ix_agents_org_id_status", "org_id", "status"),
        Index("ix_agents_visibility_status", "visibility", "status"),
    )


class AgentCapability(Base):
    """One row per (capability, agent): the index a capability search walks."""

    __tablename__ = "agent_capabilities"

    capability: Mapped[str] = mapped_column(String(100), primary_key=True)
    agent_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )

    __table_args__ = (Index("ix_agent_capabilities_agent_id", "agent_id"),)


class AgentTag(Base):
    """One row per (tag, agent), like `AgentCapability`."""

    __tablename__ = "agent_tags"

    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )

    __table_args__ = (Index("ix_agent_tags_agent_id", "agent_id"),)


class AgentKey(Base):
    """A public key an agent holds (JWK); never a private key."""

    __tablename__ = "agent_keys"

    agent_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(63))
    algorithm: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    # One key identifies one agent: its did:key is unique across the registry.
    did_key: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        ForeignKeyConstraint(
            ["agent_id", "org_id"], ["agents.id", "agents.org_id"], ondelete="CASCADE"
        ),
    )
