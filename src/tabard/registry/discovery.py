"""Listing and searching agents: an org's own list, and discovery across the registry.

Discovery shows public, active agents of every org and all agents of the caller's own org.
Capability and tag filters probe the `(capability, agent_id)` / `(tag, agent_id)` primary keys,
so a search stays an index lookup as the registry grows; pages are keyset-paginated by id.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.context import Actor
from tabard.core.pagination import decode_cursor, page_of
from tabard.registry.models import Agent, AgentCapability, AgentTag
from tabard.registry.schemas import AgentFilters, AgentStatus, DiscoveryQuery, Visibility

_LIKE_ESCAPE = "\\"


async def list_org_agents(
    session: AsyncSession, org_id: str, filters: AgentFilters
) -> tuple[list[Agent], str | None]:
    """A page of one org's agents matching every given filter."""
    return await _page(
        session, _filtered(select(Agent).where(Agent.org_id == org_id), filters), filters
    )


async def search(
    session: AsyncSession, actor: Actor, query: DiscoveryQuery
) -> tuple[list[Agent], str | None]:
    """A page of the agents `actor` may discover that match every given criterion."""
    statement = _filtered(select(Agent).where(_visible_to(actor)), query)
    if query.org is not None:
        statement = statement.where(Agent.org_id == query.org)
    if query.q is not None:
        statement = statement.where(_text_match(query.q))
    return await _page(session, statement, query)


def _visible_to(actor: Actor) -> ColumnElement[bool]:
    if actor.is_platform_admin:
        return true()
    discoverable = and_(
        Agent.visibility == Visibility.PUBLIC.value, Agent.status == AgentStatus.ACTIVE.value
    )
    own = Agent.org_id == actor.org_id if actor.org_id is not None else false()
    return or_(own, discoverable)


def _filtered(statement: Select[Agent], filters: AgentFilters) -> Select[Agent]:
    if filters.status is not None:
        statement = statement.where(Agent.status == filters.status.value)
    if filters.type is not None:
        statement = statement.where(Agent.type == filters.type)
    if filters.environment is not None:
        statement = statement.where(Agent.environment == filters.environment.value)
    for capability in dict.fromkeys(filters.capability):
        holders = select(AgentCapability.agent_id).where(AgentCapability.capability == capability)
        statement = statement.where(Agent.id.in_(holders))
    if filters.tag is not None:
        statement = statement.where(
            Agent.id.in_(select(AgentTag.agent_id).where(AgentTag.tag == filters.tag))
        )
    return statement


def _text_match(text: str) -> ColumnElement[bool]:
    escaped = text.lower().replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2)
    pattern = "%" + escaped.replace("%", r"\%").replace("_", r"\_") + "%"
    return or_(
        *(
            func.lower(column).like(pattern, escape=_LIKE_ESCAPE)
            for column in (Agent.name, Agent.display_name, Agent.description)
        )
    )


async def _page(
    session: AsyncSession, statement: Select[Agent], filters: AgentFilters
) -> tuple[list[Agent], str | None]:
    after = decode_cursor(filters.cursor)
    if after is not None:
        statement = statement.where(Agent.id > str(after))
    statement = statement.order_by(Agent.id).limit(filters.limit + 1)
    rows = list((await session.execute(statement)).scalars())
    return page_of(rows, filters.limit, key=lambda agent: agent.id)
