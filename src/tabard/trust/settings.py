"""Each organization's trust policy: whether its agents need an approved binding to obtain
tokens. Turning the requirement on ends, at once, the live tokens of every agent without one."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.context import Context
from tabard.registry.service import AgentRef
from tabard.tenancy import service as tenancy
from tabard.trust.bindings import agents_without_approval
from tabard.trust.models import OrgTrustSettings
from tabard.trust.schemas import TrustSettingsOut, TrustSettingsUpdate
from tabard.trust.service import binding_required, binding_withdrawn, record_change


async def settings_for(session: AsyncSession, org_id: str) -> TrustSettingsOut:
    await tenancy.get_org(session, org_id)
    return TrustSettingsOut(binding_required=await binding_required(session, org_id))


async def update_settings(
    session: AsyncSession, ctx: Context, org_id: str, data: TrustSettingsUpdate
) -> TrustSettingsOut:
    await tenancy.get_org(session, org_id)
    row = await session.get(OrgTrustSettings, org_id)
    was_required = bool(row and row.binding_required)
    if row is None:
        row = OrgTrustSettings(org_id=org_id)
        session.add(row)
    row.binding_required = data.binding_required
    row.updated_at = ctx.clock.now()
    details = {"binding_required": data.binding_required}
    await record_change(session, ctx, "org.trust_settings.updated", org_id, org_id, details)
    if data.binding_required and not was_required:
        for agent_id in await agents_without_approval(session, org_id):
            await binding_withdrawn.run(session, ctx, AgentRef(agent_id, org_id))
    return TrustSettingsOut(binding_required=data.binding_required)
