"""Bindings: an org's approval of one of its agents for a capability scope.

`pending → approved → revoked`, and a revoked binding may be approved again. One binding per
agent; its scope must stay within the agent's capabilities. Revoking an approved binding ends
the agent's live tokens at once (`binding_withdrawn`).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.context import Context
from tabard.core.ids import new_id
from tabard.core.pagination import DEFAULT_LIMIT, decode_cursor, page_of
from tabard.registry import service as registry
from tabard.registry.service import AgentRef
from tabard.trust.errors import (
    BindingAlreadyExists,
    BindingNotFound,
    BindingScopeExceedsCapabilities,
    BindingStateConflict,
)
from tabard.trust.models import Binding
from tabard.trust.schemas import BindingCreate, BindingStatus, BindingUpdate
from tabard.trust.service import binding_withdrawn, record_change

_APPROVABLE = (BindingStatus.PENDING.value, BindingStatus.REVOKED.value)
_REVOCABLE = (BindingStatus.PENDING.value, BindingStatus.APPROVED.value)


async def create_binding(
    session: AsyncSession, ctx: Context, org_id: str, data: BindingCreate
) -> Binding:
    agent = await registry.get_mutable_agent(session, org_id, data.agent_id)
    scope = list(dict.fromkeys(data.scope))
    _check_scope(scope, agent.capabilities)
    now = ctx.clock.now()
    binding = Binding(
        id=new_id(),
        org_id=org_id,
        agent_id=agent.id,
        scope=scope,
        status=BindingStatus.PENDING.value,
        note=data.note,
        created_at=now,
        updated_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(binding)
    except IntegrityError:
        raise BindingAlreadyExists(
            f"agent {agent.id!r} already has a binding; change or re-approve that one"
        ) from None
    await _changed(session, ctx, "binding.created", binding)
    return binding


async def get_binding(session: AsyncSession, org_id: str, binding_id: str) -> Binding:
    statement = select(Binding).where(Binding.id == binding_id, Binding.org_id == org_id)
    binding = (await session.execute(statement)).scalar_one_or_none()
    if binding is None:
        raise BindingNotFound(f"no binding {binding_id!r}")
    return binding


async def list_bindings(
    session: AsyncSession,
    org_id: str,
    *,
    status: BindingStatus | None = None,
    agent_id: str | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> tuple[list[Binding], str | None]:
    statement = select(Binding).where(Binding.org_id == org_id)
    if status is not None:
        statement = statement.where(Binding.status == status.value)
    if agent_id is not None:
        statement = statement.where(Binding.agent_id == agent_id)
    after = decode_cursor(cursor)
    if after is not None:
        statement = statement.where(Binding.id > str(after))
    rows = list((await session.execute(statement.order_by(Binding.id).limit(limit + 1))).scalars())
    return page_of(rows, limit, key=lambda binding: binding.id)


async def update_binding(
    session: AsyncSession, ctx: Context, org_id: str, binding_id: str, data: BindingUpdate
) -> Binding:
    """A new scope or note; an approved binding's scope is not changed under live tokens."""
    binding = await get_binding(session, org_id, binding_id)
    if data.scope is not None:
        if binding.status == BindingStatus.APPROVED.value:
            raise BindingStateConflict(
                "an approved binding's scope cannot change; revoke it, change it, approve it again"
            )
        agent = await registry.get_agent(session, org_id, binding.agent_id)
        binding.scope = list(dict.fromkeys(data.scope))
        _check_scope(binding.scope, agent.capabilities)
    if data.note is not None:
        binding.note = data.note
    binding.updated_at = ctx.clock.now()
    await _changed(session, ctx, "binding.updated", binding)
    return binding


async def approve_binding(
    session: AsyncSession, ctx: Context, org_id: str, binding_id: str
) -> Binding:
    """pending or revoked → approved; the scope is checked again (capabilities may shrink)."""
    binding = await get_binding(session, org_id, binding_id)
    if binding.status not in _APPROVABLE:
        raise BindingStateConflict(f"binding {binding_id!r} is already approved")
    agent = await registry.get_mutable_agent(session, org_id, binding.agent_id)
    _check_scope(binding.scope, agent.capabilities)
    binding.status = BindingStatus.APPROVED.value
    binding.approved_at = binding.updated_at = ctx.clock.now()
    binding.revoked_at = None  # the audit log keeps the history; the row says what holds now
    await _changed(session, ctx, "binding.approved", binding)
    return binding


async def revoke_binding(
    session: AsyncSession, ctx: Context, org_id: str, binding_id: str
) -> Binding:
    """pending or approved → revoked: the agent's live tokens end at once, its logins are
    refused, and calls with tokens it still holds get 403 `BINDING_REVOKED`."""
    binding = await get_binding(session, org_id, binding_id)
    if binding.status not in _REVOCABLE:
        raise BindingStateConflict(f"binding {binding_id!r} is already revoked")
    binding.status = BindingStatus.REVOKED.value
    binding.revoked_at = binding.updated_at = ctx.clock.now()
    await _changed(session, ctx, "binding.revoked", binding)
    await binding_withdrawn.run(session, ctx, AgentRef(binding.agent_id, org_id))
    return binding


async def agents_without_approval(session: AsyncSession, org_id: str) -> list[str]:
    """Live agents of the org with no approved binding."""
    approved = select(Binding.agent_id).where(
        Binding.org_id == org_id, Binding.status == BindingStatus.APPROVED.value
    )
    approved_ids = set((await session.execute(approved)).scalars())
    return [
        id_ for id_ in await registry.list_agent_ids(session, org_id) if id_ not in approved_ids
    ]


def _check_scope(scope: list[str], capabilities: list[str]) -> None:
    beyond = [item for item in scope if item not in set(capabilities)]
    if beyond:
        raise BindingScopeExceedsCapabilities(
            f"scope outside the agent's capabilities: {' '.join(beyond)}", beyond=beyond
        )


async def _changed(session: AsyncSession, ctx: Context, action: str, binding: Binding) -> None:
    details = {
        "binding_id": binding.id,
        "agent_id": binding.agent_id,
        "status": binding.status,
        "scope": list(binding.scope),
    }
    await record_change(session, ctx, action, binding.org_id, binding.id, details)
