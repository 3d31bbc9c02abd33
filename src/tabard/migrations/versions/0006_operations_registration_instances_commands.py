"""operations: registration tokens, agent instances (heartbeats), presence, declared actions,
commands

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tabard.core.db

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registration_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=63), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("preset", sa.JSON(), nullable=False),
        sa.Column("created_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("used_by_agent_id", sa.String(length=36), nullable=True),
        sa.Column("revoked_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_registration_tokens_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registration_tokens")),
        sa.UniqueConstraint("digest", name=op.f("uq_registration_tokens_digest")),
    )
    with op.batch_alter_table("registration_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_registration_tokens_org_id"), ["org_id"], unique=False)

    op.create_table(
        "agent_actions",
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("org_id", sa.String(length=63), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("params_schema", sa.JSON(), nullable=False),
        sa.Column("dangerous", sa.Boolean(), nullable=False),
        sa.Column("requires_prepare", sa.Boolean(), nullable=False),
        sa.Column("declared_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id", "org_id"],
            ["agents.id", "agents.org_id"],
            name=op.f("fk_agent_actions_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("agent_id", "name", name=op.f("pk_agent_actions")),
    )
    op.create_table(
        "agent_instances",
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("instance_id", sa.String(length=128), nullable=False),
        sa.Column("org_id", sa.String(length=63), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("sdk_version", sa.String(length=100), nullable=False),
        sa.Column("status_data", sa.JSON(), nullable=False),
        sa.Column("clock_skew_seconds", sa.Float(), nullable=False),
        sa.Column("first_seen_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeats", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id", "org_id"],
            ["agents.id", "agents.org_id"],
            name=op.f("fk_agent_instances_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("agent_id", "instance_id", name=op.f("pk_agent_instances")),
    )
    with op.batch_alter_table("agent_instances", schema=None) as batch_op:
        batch_op.create_index(
            "ix_agent_instances_org_id_last_seen_at", ["org_id", "last_seen_at"], unique=False
        )

    op.create_table(
        "agent_presence",
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=63), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("changed_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_agent_presence_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("agent_id", name=op.f("pk_agent_presence")),
    )
    op.create_table(
        "commands",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=63), nullable=False),
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("instance_id", sa.String(length=128), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("prepare_command_id", sa.String(length=36), nullable=True),
        sa.Column("retry_of", sa.String(length=36), nullable=True),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_seconds", sa.Integer(), nullable=False),
        sa.Column("leased_to", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("dispatched_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("started_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("output", sa.JSON(), nullable=True),
        sa.Column("has_secrets", sa.Boolean(), nullable=False),
        sa.Column("error_code", sa.String(length=100), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id", "org_id"],
            ["agents.id", "agents.org_id"],
            name=op.f("fk_commands_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commands")),
        sa.UniqueConstraint(
            "agent_id", "idempotency_key", name="uq_commands_agent_id_idempotency_key"
        ),
    )
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.create_index("ix_commands_agent_id_state", ["agent_id", "state"], unique=False)
        batch_op.create_index("ix_commands_state_expires_at", ["state", "expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_index("ix_commands_state_expires_at")
        batch_op.drop_index("ix_commands_agent_id_state")

    op.drop_table("commands")
    op.drop_table("agent_presence")
    with op.batch_alter_table("agent_instances", schema=None) as batch_op:
        batch_op.drop_index("ix_agent_instances_org_id_last_seen_at")

    op.drop_table("agent_instances")
    op.drop_table("agent_actions")
    with op.batch_alter_table("registration_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_registration_tokens_org_id"))

    op.drop_table("registration_tokens")
