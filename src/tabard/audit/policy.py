"""Who may read the audit log."""

from __future__ import annotations

from tabard.core.context import Actor, ActorKind
from tabard.core.errors import Forbidden, NotFound


def audit_scope(actor: Actor, requested_org: str | None) -> str | None:
    """The org an audit query is confined to: the admin's choice, or the caller's own org."""
    if actor.is_platform_admin:
        return requested_org
    if actor.org_id is None or actor.kind is not ActorKind.ORG_KEY:
        raise Forbidden("the audit log is for the platform admin and org keys")
    if requested_org is not None and requested_org != actor.org_id:
        raise NotFound(f"no organization {requested_org!r}")
    return actor.org_id


def require_platform_admin(actor: Actor) -> None:
    if not actor.is_platform_admin:
        raise Forbidden("only the platform admin may verify the whole audit log")
