"""Credentials tables: the client credentials agents authenticate with."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKeyConstraint, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from tabard.core.db import Base, UTCDateTime


class ClientCredential(Base):
    """One `client_id` of an agent: a secret (stored as a keyed digest) or a JWKS for
    `private_key_jwt`. During a rotation grace period the previous digest still verifies."""

    __tablename__ = "client_credentials"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(63))
    agent_id: Mapped[str] = mapped_column(String(36))
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    auth_method: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    secret_prefix: Mapped[str | None] = mapped_column(String(16))
    secret_digest: Mapped[str | None] = mapped_column(String(64))
    previous_secret_digest: Mapped[str | None] = mapped_column(String(64))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    jwks_uri: Mapped[str | None] = mapped_column(String(2048))
    # The most its tokens may carry; None: the agent's capabilities.
    scope: Mapped[list[str] | None] = mapped_column(JSON)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        # The (agent, org) pair is one foreign key, so a credential can never cross tenants.
        ForeignKeyConstraint(
            ["agent_id", "org_id"], ["agents.id", "agents.org_id"], ondelete="CASCADE"
        ),
        Index("ix_client_credentials_agent_id", "agent_id"),
        Index("ix_client_credentials_status_expires_at", "status", "expires_at"),
    )
