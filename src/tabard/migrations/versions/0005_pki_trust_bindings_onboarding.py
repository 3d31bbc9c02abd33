"""pki and trust: org CAs, agent certificates, pins, certificate revocations, bindings, org
trust and pki settings, onboarding invites, org contact, credential scope

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tabard.core.db

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "certificate_authorities",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=63), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=1000), nullable=False),
        sa.Column("key_algorithm", sa.String(length=16), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("intermediates_pem", sa.Text(), nullable=False),
        sa.Column("sealed_key", sa.LargeBinary(), nullable=True),
        sa.Column("not_before", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("not_after", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("replaced_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("replaced_by", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_certificate_authorities_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certificate_authorities")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_certificate_authorities_fingerprint")),
    )
    with op.batch_alter_table("certificate_authorities", schema=None) as batch_op:
        batch_op.create_index(
            "ix_certificate_authorities_org_id_status", ["org_id", "status"], unique=False
        )

    op.create_table(
        "org_invites",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("org_id", sa.String(length=63), nullable=True),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_org_invites_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_org_invites")),
        sa.UniqueConstraint("digest", name=op.f("uq_org_invites_digest")),
    )
    op.create_table(
        "org_pki_settings",
        sa.Column("org_id", sa.String(length=63), nullable=False),
        sa.Column("certificate_lifetime_seconds", sa.Integer(), nullable=False),
        sa.Column("updated_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_org_pki_settings_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_org_pki_settings")),
    )
    op.create_table(
        "org_trust_settings",
        sa.Column("org_id", sa.String(length=63), nullable=False),
        sa.Column("binding_required", sa.Boolean(), nullable=False),
        sa.Column("updated_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_org_trust_settings_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_org_trust_settings")),
    )
    op.create_table(
        "agent_certificates",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=63), nullable=False),
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("ca_id", sa.String(length=36), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("thumbprint", sa.String(length=64), nullable=False),
        sa.Column("spiffe_id", sa.String(length=300), nullable=False),
        sa.Column("key_algorithm", sa.String(length=16), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("not_before", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("not_after", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revocation_reason", sa.String(length=32), nullable=True),
        sa.Column("expiring_notified_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id", "org_id"],
            ["agents.id", "agents.org_id"],
            name=op.f("fk_agent_certificates_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["ca_id"],
            ["certificate_authorities.id"],
            name=op.f("fk_agent_certificates_ca_id_certificate_authorities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_certificates")),
        sa.UniqueConstraint("ca_id", "serial", name="uq_agent_certificates_ca_id_serial"),
        sa.UniqueConstraint("thumbprint", name=op.f("uq_agent_certificates_thumbprint")),
    )
    with op.batch_alter_table("agent_certificates", schema=None) as batch_op:
        batch_op.create_index("ix_agent_certificates_agent_id", ["agent_id"], unique=False)
        batch_op.create_index(
            "ix_agent_certificates_status_not_after", ["status", "not_after"], unique=False
        )

    op.create_table(
        "bindings",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=63), nullable=False),
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("scope", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("created_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("approved_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", tabard.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id", "org_id"],
            ["agents.id", "agents.org_id"],
            name=op.f("fk_bindings_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bindings")),
        sa.UniqueConstraint("agent_id", name=op.f("uq_bindings_agent_id")),
    )
    with op.batch_alter_table("bindings", schema=None) as batch_op:
        batch_op.create_index("ix_bindings_org_id_status", ["org_id", "status"], unique=False)

    op.create_table(
        "certificate_pins",
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=63), nullable=False),
        sa.Column("thumbprint", sa.String(length=64), nullable=False),
        sa.Column("certificate_id", sa.String(length=36), nullable=True),
        sa.Column("ca_id", sa.String(length=36), nullable=True),
        sa.Column("pinned_by", sa.String(length=16), nullable=False),
        sa.Column("pinned_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id", "org_id"],
            ["agents.id", "agents.org_id"],
            name=op.f("fk_certificate_pins_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("agent_id", name=op.f("pk_certificate_pins")),
    )
    with op.batch_alter_table("certificate_pins", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_certificate_pins_ca_id"), ["ca_id"], unique=False)

    op.create_table(
        "certificate_revocations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=63), nullable=False),
        sa.Column("ca_id", sa.String(length=36), nullable=True),
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("certificate_id", sa.String(length=36), nullable=True),
        sa.Column("agent_id", sa.String(length=36), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("revoked_at", tabard.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["ca_id"],
            ["certificate_authorities.id"],
            name=op.f("fk_certificate_revocations_ca_id_certificate_authorities"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_certificate_revocations_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certificate_revocations")),
        sa.UniqueConstraint("ca_id", "serial", name="uq_certificate_revocations_ca_id_serial"),
        sa.UniqueConstraint(
            "certificate_id", name=op.f("uq_certificate_revocations_certificate_id")
        ),
    )
    with op.batch_alter_table("certificate_revocations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_certificate_revocations_org_id_revoked_at", ["org_id", "revoked_at"], unique=False
        )

    with op.batch_alter_table("client_credentials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scope", sa.JSON(), nullable=True))

    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("contact", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.drop_column("contact")

    with op.batch_alter_table("client_credentials", schema=None) as batch_op:
        batch_op.drop_column("scope")

    with op.batch_alter_table("certificate_revocations", schema=None) as batch_op:
        batch_op.drop_index("ix_certificate_revocations_org_id_revoked_at")

    op.drop_table("certificate_revocations")
    with op.batch_alter_table("certificate_pins", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_certificate_pins_ca_id"))

    op.drop_table("certificate_pins")
    with op.batch_alter_table("bindings", schema=None) as batch_op:
        batch_op.drop_index("ix_bindings_org_id_status")

    op.drop_table("bindings")
    with op.batch_alter_table("agent_certificates", schema=None) as batch_op:
        batch_op.drop_index("ix_agent_certificates_status_not_after")
        batch_op.drop_index("ix_agent_certificates_agent_id")

    op.drop_table("agent_certificates")
    op.drop_table("org_trust_settings")
    op.drop_table("org_pki_settings")
    op.drop_table("org_invites")
    with op.batch_alter_table("certificate_authorities", schema=None) as batch_op:
        batch_op.drop_index("ix_certificate_authorities_org_id_status")

    op.drop_table("certificate_authorities")
