"""Agents: registration, updates and the lifecycle `active ⇄ suspended → decommissioned`.

Every function takes the caller's session and never commits; each change writes its audit event
and outbox event in that session. Reads are confined to an org (`org_id` in every signature).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit import service as audit
from tabard.core import outbox
from tabard.core.config import Settings
from tabard.core.context import Context
from tabard.core.hooks import Hook
from tabard.core.ids import new_id
from tabard.registry.did import agent_did
from tabard.registry.errors import (
    AgentAlreadyExists,
    AgentNotFound,
    AgentStateConflict,
    DidConflict,
    OrgHasActiveAgents,
    TierAgentLimitExceeded,
)
from tabard.registry.models import Agent, AgentCapability, AgentKey, AgentTag
from tabard.registry.schemas import AgentCreate, AgentStatus, AgentUpdate
from tabard.tenancy import service as tenancy


@dataclass(frozen=True, slots=True)
class AgentRef:
    """What other domains learn about an agent that is being retired."""

    id: str
    org_id: str


# Domains holding per-agent state (credentials; later tokens and certificates) revoke it here,
# in the same transaction that decommissions the agent.
agent_retired: Hook[AgentRef] = Hook("registry.agent_retired")
# Domains holding live grants of an agent (the token service) end them here on suspension.
agent_suspended: Hook[AgentRef] = Hook("registry.agent_suspended")

DidFactory = Callable[[str], str]
_LIVE = (AgentStatus.ACTIVE.value, AgentStatus.SUSPENDED.value)
_TRANSITIONS: dict[AgentStatus, tuple[AgentStatus, ...]] = {
    AgentStatus.SUSPENDED: (AgentStatus.ACTIVE,),
    AgentStatus.ACTIVE: (AgentStatus.SUSPENDED,),
    AgentStatus.DECOMMISSIONED: (AgentStatus.ACTIVE, AgentStatus.SUSPENDED),
}
_EVENTS = {
    AgentStatus.SUSPENDED: "agent.suspended",
    AgentStatus.ACTIVE: "agent.reactivated",
    AgentStatus.DECOMMISSIONED: "agent.decommissioned",
}


async def record_change(
    session: AsyncSession, ctx: Context, action: str, agent: Agent, details: dict[str, Any]
) -> None:
    """Audit and announce one change of an agent (same transaction)."""
    data = {"agent_id": agent.id, "agent_name": agent.name, **details}
    await audit.record(
        session, ctx, action=action, org_id=agent.org_id, target=agent.id, details=data
    )
    await outbox.emit(
        session, ctx.clock, type=action, org_id=agent.org_id, subject=agent.id, data=data
    )


async def create_agent(
    session: AsyncSession,
    ctx: Context,
    settings: Settings,
    org_id: str,
    data: AgentCreate,
    *,
    did_for: DidFactory | None = None,
) -> Agent:
    """Register an agent with its DID; `did_for(agent_id)` makes the DID (did:web by default)."""
    org = await tenancy.lock_org(session, org_id)
    tenancy.require_active(org_id, org.status)
    await _check_tier_limit(session, settings, org_id, org.tier)
    agent = _new_agent(
        ctx, org_id, data, did_for or (lambda id_: agent_did(settings.public_url, id_))
    )
    await _insert(session, agent)
    await _index_labels(session, agent)
    details = {"did": agent.did, "environment": agent.environment, "visibility": agent.visibility}
    await record_change(session, ctx, "agent.created", agent, details)
    return agent


async def get_agent(session: AsyncSession, org_id: str, agent_id: str) -> Agent:
    """The agent `agent_id` of `org_id`, in any status; another org's agent is not found."""
    statement = select(Agent).where(Agent.id == agent_id, Agent.org_id == org_id)
    agent = (await session.execute(statement)).scalar_one_or_none()
    if agent is None:
        raise AgentNotFound(f"no agent {agent_id!r}")
    return agent


async def get_agent_by_name(session: AsyncSession, org_id: str, name: str) -> Agent:
    """The agent named `name` in `org_id` (names are unique per org and never reused)."""
    statement = select(Agent).where(Agent.org_id == org_id, Agent.name == name)
    agent = (await session.execute(statement)).scalar_one_or_none()
    if agent is None:
        raise AgentNotFound(f"no agent named {name!r}")
    return agent


async def list_agent_ids(session: AsyncSession, org_id: str) -> list[str]:
    """Ids of the org's agents that are not decommissioned."""
    statement = select(Agent.id).where(Agent.org_id == org_id, Agent.status.in_(_LIVE))
    return list((await session.execute(statement.order_by(Agent.id))).scalars())


async def find_agent(session: AsyncSession, agent_id: str) -> Agent | None:
    """An agent by id across orgs, for public documents; callers apply visibility."""
    return await session.get(Agent, agent_id)


async def get_mutable_agent(session: AsyncSession, org_id: str, agent_id: str) -> Agent:
    """Like `get_agent`, but a decommissioned agent (final) cannot change: 409."""
    agent = await get_agent(session, org_id, agent_id)
    if agent.status == AgentStatus.DECOMMISSIONED.value:
        raise AgentStateConflict(f"agent {agent_id!r} is decommissioned; it can no longer change")
    return agent


async def update_agent(
    session: AsyncSession, ctx: Context, org_id: str, agent_id: str, data: AgentUpdate
) -> Agent:
    agent = await get_mutable_agent(session, org_id, agent_id)
    changes = data.model_dump(exclude_unset=True, mode="json")
    for field, value in changes.items():
        setattr(agent, "metadata_" if field == "metadata" else field, value)
    if not changes:
        return agent
    agent.updated_at = ctx.clock.now()
    if "capabilities" in changes or "tags" in changes:
        await _index_labels(session, agent, replace=True)
    await record_change(session, ctx, "agent.updated", agent, {"fields": sorted(changes)})
    return agent


async def set_status(
    session: AsyncSession, ctx: Context, org_id: str, agent_id: str, target: AgentStatus
) -> Agent:
    """Move an agent along its lifecycle; any other move is a 409 naming both states."""
    agent = await get_agent(session, org_id, agent_id)
    if AgentStatus(agent.status) not in _TRANSITIONS[target]:
        raise AgentStateConflict(f"agent {agent_id!r} is {agent.status}; it cannot become {target}")
    agent.status = target.value
    agent.updated_at = ctx.clock.now()
    if target is AgentStatus.DECOMMISSIONED:
        await _retire(session, ctx, agent)
    elif target is AgentStatus.SUSPENDED:
        await agent_suspended.run(session, ctx, AgentRef(agent.id, agent.org_id))
    await record_change(session, ctx, _EVENTS[target], agent, {"status": target.value})
    return agent


async def refuse_org_delete_with_agents(session: AsyncSession, ctx: Context, org_id: str) -> None:
    """`tenancy.before_org_delete` handler: an org with live agents cannot be deleted."""
    live = await _live_agent_count(session, org_id)
    if live:
        raise OrgHasActiveAgents(
            f"organization {org_id!r} still has {live} agent(s); decommission them first"
        )


def _new_agent(ctx: Context, org_id: str, data: AgentCreate, did_for: DidFactory) -> Agent:
    now = ctx.clock.now()
    agent_id = new_id()
    return Agent(
        id=agent_id,
        org_id=org_id,
        name=data.name,
        display_name=data.display_name or data.name,
        description=data.description,
        type=data.type,
        version=data.version,
        capabilities=data.capabilities,
        tags=data.tags,
        environment=data.environment.value,
        endpoint_url=data.endpoint_url,
        visibility=data.visibility.value,
        metadata_=data.metadata,
        status=AgentStatus.ACTIVE.value,
        did=did_for(agent_id),
        created_at=now,
        updated_at=now,
    )


async def _insert(session: AsyncSession, agent: Agent) -> None:
    """Insert, telling a taken name from a taken DID (both are unique constraints)."""
    try:
        async with session.begin_nested():
            session.add(agent)
    except IntegrityError:
        taken = select(Agent.id).where(Agent.org_id == agent.org_id, Agent.name == agent.name)
        if (await session.execute(taken)).first() is not None:
            raise AgentAlreadyExists(
                f"agent {agent.name!r} already exists in {agent.org_id!r} "
                "(names of decommissioned agents stay reserved)"
            ) from None
        raise DidConflict(f"DID {agent.did!r} is already taken; nothing was created") from None


async def _check_tier_limit(
    session: AsyncSession, settings: Settings, org_id: str, tier: str
) -> None:
    limit = settings.tier_agent_limits.get(tier)
    if limit is None:
        return
    live = await _live_agent_count(session, org_id)
    if live >= limit:
        raise TierAgentLimitExceeded(
            f"tier {tier!r} allows {limit} agent(s); {org_id!r} has {live}. "
            "Decommission an agent or move to a higher tier.",
            limit=limit,
        )


async def _live_agent_count(session: AsyncSession, org_id: str) -> int:
    statement = select(func.count()).where(Agent.org_id == org_id, Agent.status.in_(_LIVE))
    return int((await session.execute(statement)).scalar_one())


async def _index_labels(session: AsyncSession, agent: Agent, *, replace: bool = False) -> None:
    """Mirror capabilities and tags into the lookup tables that discovery searches."""
    if replace:
        await session.execute(delete(AgentCapability).where(AgentCapability.agent_id == agent.id))
        await session.execute(delete(AgentTag).where(AgentTag.agent_id == agent.id))
    session.add_all(AgentCapability(capability=c, agent_id=agent.id) for c in agent.capabilities)
    session.add_all(AgentTag(tag=tag, agent_id=agent.id) for tag in agent.tags)


async def _retire(session: AsyncSession, ctx: Context, agent: Agent) -> None:
    """Decommissioning is final: the agent's keys and every other domain's credentials go."""
    await session.execute(
        update(AgentKey)
        .where(AgentKey.agent_id == agent.id, AgentKey.revoked_at.is_(None))
        .values(revoked_at=ctx.clock.now())
    )
    await agent_retired.run(session, ctx, AgentRef(id=agent.id, org_id=agent.org_id))
