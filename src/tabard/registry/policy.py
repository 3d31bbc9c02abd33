"""Who may do what with agents. One function per action; each raises or returns."""

from __future__ import annotations

from tabard.core.context import Actor
from tabard.registry.errors import AgentNotFound
from tabard.registry.models import Agent
from tabard.registry.schemas import Visibility
from tabard.tenancy import policy as tenancy_policy


def require_agent_management(actor: Actor, org_id: str) -> None:
    """Create, change and retire agents: the platform admin or the org itself; others see 404."""
    tenancy_policy.require_org_access(actor, org_id)


def can_see(actor: Actor, agent: Agent) -> bool:
    """Public agents are visible to everyone; private ones to their org and the platform admin."""
    if agent.visibility == Visibility.PUBLIC.value:
        return True
    return actor.is_platform_admin or actor.org_id == agent.org_id


def require_visible(actor: Actor, agent: Agent | None, agent_id: str) -> Agent:
    """The agent if the actor may see it; otherwise 404, never a hint that it exists."""
    if agent is None or not can_see(actor, agent):
        raise AgentNotFound(f"no agent {agent_id!r}")
    return agent
