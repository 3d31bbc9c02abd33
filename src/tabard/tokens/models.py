"""Token-service tables: revocations, delegation chains and per-org token settings.

Issued tokens themselves are not stored: they are self-contained JWTs (RFC 9068). What must
outlive a process is what makes a token stop working before its `exp`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tabard.core.db import Base, UTCDateTime


class TokenRevocation(Base):
    """Tokens matching (`kind`, `value`) and issued before `revoked_before` are dead.

    Kinds: `jti` (one token), `chain` (a delegation chain), `agent`, `client` (a credential),
    `org`, `kid` (a signing key). Rows matter until `expires_at`, when every token they could
    match has expired anyway; the kv store caches them for that long.
    """

    __tablename__ = "token_revocations"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)
    org_id: Mapped[str | None] = mapped_column(String(63))
    revoked_before: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_token_revocations_expires_at", "expires_at"),)


class DelegationChain(Base):
    """One RFC 8693 delegation chain: a subject agent's token handed down through actors."""

    __tablename__ = "delegation_chains"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    subject_agent_id: Mapped[str] = mapped_column(String(36))
    root_jti: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OrgTokenSettings(Base):
    """An organization's token policy; absent means the deployment's defaults."""

    __tablename__ = "org_token_settings"

    org_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    access_token_lifetime_seconds: Mapped[int | None] = mapped_column(Integer)
    require_dpop: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
