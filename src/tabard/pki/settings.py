"""Each organization's certificate policy: how long the agent certificates Tabard issues live
(the deployment's `TABARD_CERTIFICATE_LIFETIME_SECONDS`, 24 h, unless the org chose otherwise;
never more than 90 days)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.config import Settings
from tabard.core.context import Context
from tabard.pki.models import OrgPkiSettings
from tabard.pki.schemas import PkiSettingsOut, PkiSettingsUpdate
from tabard.pki.service import record_change
from tabard.tenancy import service as tenancy


async def settings_for(session: AsyncSession, settings: Settings, org_id: str) -> PkiSettingsOut:
    row = await session.get(OrgPkiSettings, org_id)
    lifetime = row.certificate_lifetime_seconds if row else settings.certificate_lifetime_seconds
    return PkiSettingsOut(certificate_lifetime_seconds=lifetime)


async def update_settings(
    session: AsyncSession, ctx: Context, org_id: str, data: PkiSettingsUpdate
) -> PkiSettingsOut:
    await tenancy.get_org(session, org_id)
    row = await session.get(OrgPkiSettings, org_id)
    if row is None:
        row = OrgPkiSettings(org_id=org_id)
        session.add(row)
    row.certificate_lifetime_seconds = data.certificate_lifetime_seconds
    row.updated_at = ctx.clock.now()
    details = {"certificate_lifetime_seconds": row.certificate_lifetime_seconds}
    await record_change(session, ctx, "org.pki_settings.updated", org_id, org_id, details)
    return PkiSettingsOut(**details)
