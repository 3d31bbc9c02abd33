"""Who may do what with registration tokens, agent status and commands."""

from __future__ import annotations

from tabard.core.context import Actor, ActorKind
from tabard.tenancy import policy as tenancy_policy
from tabard.tenancy.errors import NotPermitted


def require_operator(actor: Actor, org_id: str) -> None:
    """Registration tokens, status, commands: the org (or the admin); other orgs see 404."""
    tenancy_policy.require_org_access(actor, org_id)


def require_agent(actor: Actor) -> tuple[str, str]:
    """The agent's own side (heartbeats, actions, its commands): its access token only.
    Returns (org id, agent id)."""
    if actor.kind is not ActorKind.AGENT or actor.id is None or actor.org_id is None:
        raise NotPermitted("only an agent's own access token may do this")
    return actor.org_id, actor.id
