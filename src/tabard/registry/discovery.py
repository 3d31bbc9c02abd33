"""Listing and searching agents: an org's own list, and discovery across the registry.

Discovery shows public, active agents of every org and all agents of the caller's own org.

Pages are keyset-paginated by agent id. A capability search walks the `(capability, agent_id)`
primary key of its rarest capability, which is already in id order, and probes the others (and
tags) by primary key; so a page costs about `limit` index steps whether a capability is held
by ten agents or by fifty thousand, and does not grow with the registry.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased

from tabard.core.context import Actor
from tabard.core.pagination import decode_cursor, page_of
from tabard.registry.models import Agent, AgentCapability, AgentTag
from tabard.registry.schemas import AgentFilters, AgentStatus, DiscoveryQuery, Visibility

_LIKE_ESCAPE = "\\"
_RARITY_SAMPLE = 10_000


async def list_org_agents(
    session: AsyncSession, org_id: str, filters: AgentFilters
) -> tuple[list[Agent], str | None]:
    """A page of one org's agents matching every given filter."""
    statement, key = await _filtered(session, filters)
    return await _page(session, statement.where(Agent.org_id == org_id), key, filters)


async def search(
    session: AsyncSession, actor: Actor, query: DiscoveryQuery
) -> tuple[list[Agent], str | None]:
    """A page of the agents `actor` may discover that match every given criterion."""
    statement, key = await _filtered(session, query)
    statement = statement.where(_visible_to(actor))
    if query.org is not None:
        statement = statement.where(Agent.org_id == query.org)
    if query.q is not None:
        statement = statement.where(_text_match(query.q))
    return await _page(session, statement, key, query)


def _visible_to(actor: Actor) -> ColumnElement[bool]:
    if actor.is_platform_admin:
        return true()
    discoverable = and_(
        Agent.visibility == Visibility.PUBLIC.value, Agent.status == AgentStatus.ACTIVE.value
    )
    own = Agent.org_id == actor.org_id if actor.org_id is not None else false()
    return or_(own, discoverable)


async def _filtered(
    session: AsyncSession, filters: AgentFilters
) -> tuple[Select[Agent], InstrumentedAttribute[str]]:
    """The filtered statement and the id column to order and page by."""
    statement, key = select(Agent), Agent.id
    capabilities = await _rarest_first(session, list(dict.fromkeys(filters.capability)))
    if capabilities:
        lead = aliased(AgentCapability)
        statement = statement.join(lead, lead.agent_id == Agent.id).where(
            lead.capability == capabilities[0]
        )
        key = lead.agent_id
    for capability in capabilities[1:]:
        statement = statement.where(_holds(AgentCapability, AgentCapability.capability, capability))
    if filters.tag is not None:
        statement = statement.where(_holds(AgentTag, AgentTag.tag, filters.tag))
    if filters.status is not None:
        statement = statement.where(Agent.status == filters.status.value)
    if filters.type is not None:
        statement = statement.where(Agent.type == filters.type)
    if filters.environment is not None:
        statement = statement.where(Agent.environment == filters.environment.value)
    return statement, key


async def _rarest_first(session: AsyncSession, capabilities: list[str]) -> list[str]:
    """Order capabilities by how many agents hold them (counted up to a cap), rarest first.

    Walking the rarest one keeps an all-of search short; PostgreSQL's planner would find this
    itself, SQLite's keeps no per-value statistics.
    """
    if len(capabilities) < 2:
        return capabilities
    held = {capability: await _holders_up_to(session, capability) for capability in capabilities}
    return sorted(capabilities, key=held.__getitem__)


async def _holders_up_to(session: AsyncSession, capability: str) -> int:
    sample = (
        select(AgentCapability.agent_id)
        .where(AgentCapability.capability == capability)
        .limit(_RARITY_SAMPLE)
        .subquery()
    )
    return int((await session.execute(select(func.count()).select_from(sample))).scalar_one())


def _holds(table: type[AgentCapability] | type[AgentTag], column: Any, value: str) -> Any:
    """`EXISTS` probe of a lookup table's primary key for the current agent."""
    # OFFSET keeps PostgreSQL from pulling the probe up into a semi-join: a generic plan (used
    # once a prepared statement has run five times) would merge-join every holder of the label.
    probe = select(table.agent_id).where(column == value, table.agent_id == Agent.id)
    return probe.offset(0).exists()


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
    session: AsyncSession,
    statement: Select[Agent],
    key: InstrumentedAttribute[str],
    filters: AgentFilters,
) -> tuple[list[Agent], str | None]:
    after = decode_cursor(filters.cursor)
    if after is not None:
        statement = statement.where(key > str(after))
    statement = statement.order_by(key).limit(filters.limit + 1)
    rows = list((await session.execute(statement)).scalars())
    return page_of(rows, filters.limit, key=lambda agent: agent.id)
