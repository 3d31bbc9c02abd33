"""Trust tables: bindings, each org's trust settings, and onboarding invites."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, ForeignKeyConstraint, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from tabard.core.db import Base, UTCDateTime


class Binding(Base):
    """An org's approval of one of its agents for a capability scope (one per agent)."""

    __tablename__ = "bindings"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(63))
    agent_id: Mapped[str] = mapped_column(String(36), unique=True)
    scope: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        ForeignKeyConstraint(
            ["agent_id", "org_id"], ["agents.id", "agents.org_id"], ondelete="CASCADE"
        ),
        Index("ix_bindings_org_id_status", "org_id", "status"),
    )


class OrgTrustSettings(Base):
    """Whether the org's agents need an approved binding to obtain tokens (absent: no)."""

    __tablename__ = "org_trust_settings"

    org_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    binding_required: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OrgInvite(Base):
    """A single-use onboarding invite, stored as the SHA-256 of its secret.

    `join`: a new org applies (pending until the admin decides); `org_id` is set when used.
    `attach`: the org the admin created attaches its CA and receives its first key.
    """

    __tablename__ = "org_invites"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(200))
    org_id: Mapped[str | None] = mapped_column(
        String(63), ForeignKey("organizations.id", ondelete="CASCADE")
    )
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
