"""Who may do what with bindings, trust settings and invites."""

from __future__ import annotations

from tabard.core.context import Actor
from tabard.tenancy import policy as tenancy_policy


def require_binding_management(actor: Actor, org_id: str) -> None:
    """Bindings are the org's own approvals: the org (or the platform admin); others see 404."""
    tenancy_policy.require_org_access(actor, org_id)


def require_invite_management(actor: Actor) -> None:
    """Invites bring organizations to the deployment: the platform admin only."""
    tenancy_policy.require_platform_admin(actor)
