"""token service: revocations, delegation chains, org token settings, key retirement

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tabard.core.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("publish_until", tabard.core.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("revoked_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True)
        )

    op.create_table(
        "token_revocations",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("org_id", sa.String(length=63), nullable=True),
        sa.Column("revoked_before", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("created_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "value", name=op.f("pk_token_revocations")),
    )
    with op.batch_alter_table("token_revocations", schema=None) as batch_op:
        batch_op.create_index("ix_token_revocations_expires_at", ["expires_at"], unique=False)

    op.create_table(
        "delegation_chains",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=63), nullable=False),
        sa.Column("subject_agent_id", sa.String(length=36), nullable=False),
        sa.Column("root_jti", sa.String(length=64), nullable=False),
        sa.Column("created_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_delegation_chains_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delegation_chains")),
    )
    with op.batch_alter_table("delegation_chains", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_delegation_chains_org_id"), ["org_id"], unique=False)

    op.create_table(
        "org_token_settings",
        sa.Column("org_id", sa.String(length=63), nullable=False),
        sa.Column("access_token_lifetime_seconds", sa.Integer(), nullable=True),
        sa.Column("require_dpop", sa.Boolean(), nullable=False),
        sa.Column("updated_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_org_token_settings_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_org_token_settings")),
    )


def downgrade() -> None:
    op.drop_table("org_token_settings")
    with op.batch_alter_table("delegation_chains", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delegation_chains_org_id"))
    op.drop_table("delegation_chains")
    with op.batch_alter_table("token_revocations", schema=None) as batch_op:
        batch_op.drop_index("ix_token_revocations_expires_at")
    op.drop_table("token_revocations")
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("publish_until")
