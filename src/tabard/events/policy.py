"""Who may read events and manage webhooks."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.context import Actor, ActorKind
from tabard.tenancy import policy as tenancy_policy
from tabard.tenancy import service as tenancy
from tabard.tenancy.errors import NotPermitted


def require_webhook_management(actor: Actor, org_id: str) -> None:
    """The org (or the admin); other orgs see 404, agents 403."""
    tenancy_policy.require_org_access(actor, org_id)


def stream_scope(actor: Actor, org: str | None) -> str | None:
    """Whose events a stream shows: an org key its own org's; the admin every org's, or the
    one named by `org`. Agents do not read the org's event stream."""
    if actor.is_platform_admin:
        return org
    if actor.kind is not ActorKind.ORG_KEY or actor.org_id is None:
        raise NotPermitted("events are streamed to org API keys and the platform admin")
    tenancy_policy.require_org_access(actor, org or actor.org_id)
    return actor.org_id


async def require_org(session: AsyncSession, org_id: str) -> None:
    await tenancy.get_org(session, org_id)
