"""Who may read an org's limits and usage."""

from __future__ import annotations

from tabard.core.context import Actor
from tabard.tenancy import policy as tenancy_policy


def require_usage_read(actor: Actor, org_id: str) -> None:
    """The platform admin or a principal of that org; other tenants get 404 (as for the org)."""
    tenancy_policy.require_org_access(actor, org_id)
