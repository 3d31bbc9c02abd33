"""registry: agents, keys, client credentials, signing keys

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tabard.core.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("alg", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("sealed_private_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("retired_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_keys")),
    )
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.create_index(
            "uq_signing_keys_one_active",
            ["status"],
            unique=True,
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )

    op.create_table(
        "agents",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("capabilities", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("environment", sa.String(length=16), nullable=False),
        sa.Column("endpoint_url", sa.String(length=2048), nullable=True),
        sa.Column("visibility", sa.String(length=16), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("did", sa.String(length=300), nullable=False),
        sa.Column("created_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_agents_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("did", name=op.f("uq_agents_did")),
        sa.UniqueConstraint("id", "org_id", name=op.f("uq_agents_id_org_id")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_agents_org_id_name")),
    )
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.create_index("ix_agents_org_id_status", ["org_id", "status"], unique=False)
        batch_op.create_index("ix_agents_visibility_status", ["visibility", "status"], unique=False)

    op.create_table(
        "agent_capabilities",
        sa.Column("capability", sa.String(length=100), nullable=False),
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_agent_capabilities_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("capability", "agent_id", name=op.f("pk_agent_capabilities")),
    )
    with op.batch_alter_table("agent_capabilities", schema=None) as batch_op:
        batch_op.create_index("ix_agent_capabilities_agent_id", ["agent_id"], unique=False)

    op.create_table(
        "agent_keys",
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=63), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("did_key", sa.String(length=200), nullable=False),
        sa.Column("created_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id", "org_id"],
            ["agents.id", "agents.org_id"],
            name=op.f("fk_agent_keys_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("agent_id", "kid", name=op.f("pk_agent_keys")),
        sa.UniqueConstraint("did_key", name=op.f("uq_agent_keys_did_key")),
    )
    op.create_table(
        "agent_tags",
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_agent_tags_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tag", "agent_id", name=op.f("pk_agent_tags")),
    )
    with op.batch_alter_table("agent_tags", schema=None) as batch_op:
        batch_op.create_index("ix_agent_tags_agent_id", ["agent_id"], unique=False)

    op.create_table(
        "client_credentials",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=63), nullable=False),
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("auth_method", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("secret_prefix", sa.String(length=16), nullable=True),
        sa.Column("secret_digest", sa.String(length=64), nullable=True),
        sa.Column("previous_secret_digest", sa.String(length=64), nullable=True),
        sa.Column(
            "previous_secret_expires_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("jwks", sa.JSON(), nullable=True),
        sa.Column("jwks_uri", sa.String(length=2048), nullable=True),
        sa.Column("expires_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id", "org_id"],
            ["agents.id", "agents.org_id"],
            name=op.f("fk_client_credentials_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client_credentials")),
        sa.UniqueConstraint("client_id", name=op.f("uq_client_credentials_client_id")),
    )
    with op.batch_alter_table("client_credentials", schema=None) as batch_op:
        batch_op.create_index("ix_client_credentials_agent_id", ["agent_id"], unique=False)
        batch_op.create_index(
            "ix_client_credentials_status_expires_at", ["status", "expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("client_credentials", schema=None) as batch_op:
        batch_op.drop_index("ix_client_credentials_status_expires_at")
        batch_op.drop_index("ix_client_credentials_agent_id")

    op.drop_table("client_credentials")
    with op.batch_alter_table("agent_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_agent_tags_agent_id")

    op.drop_table("agent_tags")
    op.drop_table("agent_keys")
    with op.batch_alter_table("agent_capabilities", schema=None) as batch_op:
        batch_op.drop_index("ix_agent_capabilities_agent_id")

    op.drop_table("agent_capabilities")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_index("ix_agents_visibility_status")
        batch_op.drop_index("ix_agents_org_id_status")

    op.drop_table("agents")
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_signing_keys_one_active",
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )

    op.drop_table("signing_keys")
