"""What the trust modules share, and what the token service asks of them.

The domain splits by concept: `bindings` (an org's approval of its agent for a scope),
`settings` (whether an org requires bindings), `invites` (onboarding). The hook
`binding_withdrawn` lets the token service end an agent's live tokens when its approval goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit import service as audit
from tabard.core import outbox
from tabard.core.context import Context
from tabard.core.hooks import Hook
from tabard.registry.service import AgentRef
from tabard.trust.models import Binding, OrgTrustSettings
from tabard.trust.schemas import BindingStatus

# An agent lost (or, its org now requiring one, never had) an approved binding: its live tokens
# must stop at once; the API then answers 403 `BINDING_REVOKED` to them.
binding_withdrawn: Hook[AgentRef] = Hook("trust.binding_withdrawn")


@dataclass(frozen=True, slots=True)
class BindingDecision:
    """Whether an agent may obtain tokens, and the scope its binding allows (None: no limit).

    `refusal` is the stable code of the reason it may not (`BINDING_REQUIRED`,
    `BINDING_REVOKED`), or None.
    """

    refusal: str | None
    scope: tuple[str, ...] | None


async def binding_decision(session: AsyncSession, org_id: str, agent_id: str) -> BindingDecision:
    """An approved binding limits the scope; a revoked one refuses; without one, the org's
    `binding_required` decides."""
    statement = select(Binding.status, Binding.scope).where(
        Binding.agent_id == agent_id, Binding.org_id == org_id
    )
    row = (await session.execute(statement)).one_or_none()
    if row is not None and row.status == BindingStatus.APPROVED.value:
        return BindingDecision(None, tuple(row.scope))
    if row is not None and row.status == BindingStatus.REVOKED.value:
        return BindingDecision("BINDING_REVOKED", None)
    if await binding_required(session, org_id):
        return BindingDecision("BINDING_REQUIRED", None)
    return BindingDecision(None, None)


async def binding_required(session: AsyncSession, org_id: str) -> bool:
    row = await session.get(OrgTrustSettings, org_id)
    return bool(row and row.binding_required)


async def record_change(
    session: AsyncSession,
    ctx: Context,
    action: str,
    org_id: str | None,
    target: str,
    details: dict[str, Any],
) -> None:
    """Audit and announce one trust change (same transaction)."""
    await audit.record(session, ctx, action=action, org_id=org_id, target=target, details=details)
    await outbox.emit(session, ctx.clock, type=action, org_id=org_id, subject=target, data=details)
