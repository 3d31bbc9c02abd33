"""Alembic environment. Runs on a connection handed in by `tabard.core.migrations`."""

from __future__ import annotations

from alembic import context

# Importing the models registers their tables on Base.metadata (autogenerate compares against it).
import tabard.audit.models
import tabard.core.leases
import tabard.core.outbox
import tabard.credentials.models
import tabard.events.models
import tabard.operations.models
import tabard.pki.models
import tabard.registry.models
import tabard.signing.models
import tabard.tenancy.models
import tabard.tokens.models
import tabard.trust.models  # noqa: F401
from tabard.core.db import Base

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    transaction_per_migration=True,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    on_version_apply=config.attributes.get("on_version_apply"),
)
with context.begin_transaction():
    context.run_migrations()
