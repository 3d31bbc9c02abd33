"""Who may do what with the token service's org-facing routes."""

from __future__ import annotations

from tabard.core.context import Actor
from tabard.tenancy import policy as tenancy_policy
from tabard.tenancy.errors import NotPermitted
from tabard.tokens.schemas import RevocationTarget


def require_revocation_access(actor: Actor, org_id: str, target: RevocationTarget) -> None:
    """The admin or the org's key; a bare jti names no tenant, so it is the admin's alone."""
    tenancy_policy.require_org_access(actor, org_id)
    if target is RevocationTarget.JTI and not actor.is_platform_admin:
        raise NotPermitted(
            "only the platform admin revokes by jti; revoke a token by presenting it"
        )
