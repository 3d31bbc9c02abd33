"""Each organization's token policy: access-token lifetime within the deployment's bounds, and
whether its agents must use DPoP-bound tokens."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit import service as audit
from tabard.core import outbox
from tabard.core.config import Settings
from tabard.core.context import Context
from tabard.core.errors import InvalidField
from tabard.tenancy import service as tenancy
from tabard.tokens.models import OrgTokenSettings
from tabard.tokens.schemas import TokenSettingsUpdate

MIN_LIFETIME_SECONDS = 60


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    access_token_lifetime_seconds: int
    require_dpop: bool
    customized: bool = False


async def policy_for(session: AsyncSession, settings: Settings, org_id: str) -> TokenPolicy:
    """The org's policy, or the deployment's defaults where it chose none."""
    row = await session.get(OrgTokenSettings, org_id)
    default = settings.access_token_lifetime_seconds
    if row is None:
        return TokenPolicy(default, require_dpop=False)
    lifetime = row.access_token_lifetime_seconds or default
    return TokenPolicy(lifetime, row.require_dpop, customized=True)


async def update_policy(
    session: AsyncSession, ctx: Context, settings: Settings, org_id: str, data: TokenSettingsUpdate
) -> TokenPolicy:
    await tenancy.get_org(session, org_id)
    lifetime = data.access_token_lifetime_seconds
    if lifetime is not None and not (
        MIN_LIFETIME_SECONDS <= lifetime <= settings.access_token_max_lifetime_seconds
    ):
        raise InvalidField(
            "body.access_token_lifetime_seconds",
            f"must be between {MIN_LIFETIME_SECONDS} and "
            f"{settings.access_token_max_lifetime_seconds} seconds",
        )
    row = await session.get(OrgTokenSettings, org_id)
    if row is None:
        row = OrgTokenSettings(org_id=org_id, require_dpop=False)
        session.add(row)
    if "access_token_lifetime_seconds" in data.model_fields_set:
        row.access_token_lifetime_seconds = lifetime
    if data.require_dpop is not None:
        row.require_dpop = data.require_dpop
    row.updated_at = ctx.clock.now()
    details = {
        "access_token_lifetime_seconds": row.access_token_lifetime_seconds,
        "require_dpop": row.require_dpop,
    }
    await audit.record(
        session, ctx, action="org.token_settings.updated", org_id=org_id, details=details
    )
    await outbox.emit(
        session,
        ctx.clock,
        type="org.token_settings.updated",
        org_id=org_id,
        subject=org_id,
        data=details,
    )
    return await policy_for(session, settings, org_id)
