"""Who may do what with organizations and keys. One function per action; each raises or returns."""

from __future__ import annotations

from tabard.core.context import Actor, ActorKind
from tabard.tenancy.errors import NotPermitted, OrgNotFound


def require_platform_admin(actor: Actor) -> None:
    if not actor.is_platform_admin:
        raise NotPermitted("only the platform admin may do this")


def require_org_access(actor: Actor, org_id: str) -> None:
    """Platform admin, or an API key of that very org. Other tenants get 404, not 403; the org's
    own agents (access tokens) get 403: they act for themselves, not for their org."""
    if actor.is_platform_admin:
        return
    if actor.org_id != org_id:
        raise OrgNotFound(f"no organization {org_id!r}")
    if actor.kind is not ActorKind.ORG_KEY:
        raise NotPermitted("an agent's access token cannot manage its organization; use an org key")
