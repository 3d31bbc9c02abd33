"""Who may manage an agent's credentials: the platform admin or the agent's own org (404 else)."""

from __future__ import annotations

from tabard.core.context import Actor
from tabard.tenancy import policy as tenancy_policy


def require_credential_management(actor: Actor, org_id: str) -> None:
    tenancy_policy.require_org_access(actor, org_id)
