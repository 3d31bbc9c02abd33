"""Agent status, computed when read: `online` if an instance beat within the offline threshold,
else `offline`, or `never_seen`; beside the agent's own lifecycle status. Nothing waits for a
sweep to become true.

The presence job (one leader, every `TABARD_PRESENCE_CHECK_SECONDS`) only announces
transitions, `agent.online` and `agent.offline`, as audit and outbox events for webhooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit import service as audit
from tabard.core import outbox
from tabard.core.context import Context
from tabard.operations.heartbeats import CLOCK_SKEW_TOLERANCE_SECONDS, Beat
from tabard.operations.models import AgentInstance, AgentPresence
from tabard.operations.schemas import AgentStatusOut, InstanceOut, Presence
from tabard.registry import service as registry


def presence_at(last_seen: datetime | None, now: datetime, threshold: float) -> Presence:
    if last_seen is None:
        return Presence.NEVER_SEEN
    return Presence.ONLINE if now - last_seen <= timedelta(seconds=threshold) else Presence.OFFLINE


async def agent_status(
    session: AsyncSession,
    pending: Sequence[Beat],
    org_id: str,
    agent_id: str,
    now: datetime,
    threshold: float,
) -> AgentStatusOut:
    """`pending` is `HeartbeatBuffer.pending_for(agent_id)`, taken before `session` first
    reads: a flush that commits after the read began and clears the buffer before the merge
    would otherwise hide its beats from both (an instance missing from an online agent)."""
    agent = await registry.get_agent(session, org_id, agent_id)
    instances = await instances_of(session, pending, org_id, agent_id, now, threshold)
    last_seen = max((item.last_seen_at for item in instances), default=None)
    return AgentStatusOut(
        agent_id=agent.id,
        lifecycle=agent.status,
        presence=presence_at(last_seen, now, threshold),
        last_seen_at=last_seen,
        online_instances=sum(item.presence is Presence.ONLINE for item in instances),
        instances=instances,
    )


async def instances_of(
    session: AsyncSession,
    pending: Sequence[Beat],
    org_id: str,
    agent_id: str,
    now: datetime,
    threshold: float,
) -> list[InstanceOut]:
    """The agent's instances, stored and not yet flushed, newest beat first."""
    statement = select(AgentInstance).where(
        AgentInstance.agent_id == agent_id, AgentInstance.org_id == org_id
    )
    merged = {
        row.instance_id: _from_row(row) for row in (await session.execute(statement)).scalars()
    }
    for beat in pending:
        stored = merged.get(beat.instance_id)
        if stored is None or beat.seen_at >= stored.last_seen_at:
            merged[beat.instance_id] = _from_beat(beat, stored.first_seen_at if stored else None)
    for item in merged.values():
        item.presence = presence_at(item.last_seen_at, now, threshold)
    return sorted(merged.values(), key=lambda item: item.last_seen_at, reverse=True)


def _from_row(row: AgentInstance) -> InstanceOut:
    return InstanceOut(
        instance_id=row.instance_id,
        hostname=row.hostname,
        version=row.version,
        sdk_version=row.sdk_version,
        status=row.status_data,
        presence=Presence.NEVER_SEEN,
        first_seen_at=row.first_seen_at,
        last_seen_at=row.last_seen_at,
        clock_skew_seconds=row.clock_skew_seconds,
        clock_skewed=abs(row.clock_skew_seconds) > CLOCK_SKEW_TOLERANCE_SECONDS,
    )


def _from_beat(beat: Beat, first_seen: datetime | None) -> InstanceOut:
    return InstanceOut(
        instance_id=beat.instance_id,
        hostname=beat.hostname,
        version=beat.version,
        sdk_version=beat.sdk_version,
        status=beat.status,
        presence=Presence.NEVER_SEEN,
        first_seen_at=first_seen or beat.seen_at,
        last_seen_at=beat.seen_at,
        clock_skew_seconds=beat.clock_skew_seconds,
        clock_skewed=abs(beat.clock_skew_seconds) > CLOCK_SKEW_TOLERANCE_SECONDS,
    )


async def online_instance_ids(
    session: AsyncSession,
    pending: Sequence[Beat],
    org_id: str,
    agent_id: str,
    now: datetime,
    threshold: float,
) -> list[str]:
    instances = await instances_of(session, pending, org_id, agent_id, now, threshold)
    return [item.instance_id for item in instances if item.presence is Presence.ONLINE]


async def announce_transitions(session: AsyncSession, ctx: Context, threshold: float) -> int:
    """Record `agent.online` / `agent.offline` for every agent whose presence changed since
    the last announcement; returns how many changed."""
    now = ctx.clock.now()
    latest = select(
        AgentInstance.agent_id, AgentInstance.org_id, func.max(AgentInstance.last_seen_at)
    ).group_by(AgentInstance.agent_id, AgentInstance.org_id)
    announced = {
        row.agent_id: row for row in (await session.execute(select(AgentPresence))).scalars()
    }
    changed = 0
    for agent_id, org_id, last_seen in (await session.execute(latest)).all():
        state = presence_at(last_seen, now, threshold)
        row = announced.get(agent_id)
        if row is not None and row.state == state.value:
            continue
        if row is None:
            row = AgentPresence(agent_id=agent_id, org_id=org_id)
            session.add(row)
        row.state, row.changed_at = state.value, now
        await _announce(session, ctx, f"agent.{state.value}", org_id, agent_id, last_seen)
        changed += 1
    return changed


async def _announce(
    session: AsyncSession,
    ctx: Context,
    action: str,
    org_id: str,
    agent_id: str,
    last_seen: datetime,
) -> None:
    details = {"agent_id": agent_id, "last_seen_at": last_seen.isoformat()}
    await audit.record(session, ctx, action=action, org_id=org_id, target=agent_id, details=details)
    await outbox.emit(
        session, ctx.clock, type=action, org_id=org_id, subject=agent_id, data=details
    )
