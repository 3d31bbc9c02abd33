"""Organizations and their API keys.

Every function takes the caller's session (one unit of work) and never commits. State changes
write their audit event and outbox event in that same session.
"""

from __future__ import annotations

from datetime import timedelta
from enum import Enum
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit import service as audit
from tabard.core import outbox
from tabard.core.context import Context
from tabard.core.hashing import keyed_digest
from tabard.core.hooks import Hook
from tabard.core.ids import ORG_KEY_PREFIX, new_id, new_secret
from tabard.core.pagination import DEFAULT_LIMIT, decode_cursor, page_of
from tabard.tenancy.errors import (
    ApiKeyNotFound,
    OrgAlreadyExists,
    OrgNotActive,
    OrgNotFound,
    OrgStateConflict,
    OrgSuspended,
)
from tabard.tenancy.models import Organization, OrgApiKey
from tabard.tenancy.schemas import ApiKeyCreate, OrgCreate, OrgStatus, OrgUpdate

KEY_DISPLAY_PREFIX_LENGTH = 12

# Domains that own an org's resources veto its deletion here (the registry, while agents remain).
before_org_delete: Hook[str] = Hook("tenancy.before_org_delete")
# Domains holding live grants of the org's agents (the token service) end them here.
org_suspended: Hook[str] = Hook("tenancy.org_suspended")


class OrgTransition(Enum):
    """A move along the org lifecycle: (from, to, event)."""

    APPROVE = (OrgStatus.PENDING, OrgStatus.ACTIVE, "org.approved")
    REJECT = (OrgStatus.PENDING, OrgStatus.REJECTED, "org.rejected")
    SUSPEND = (OrgStatus.ACTIVE, OrgStatus.SUSPENDED, "org.suspended")
    REACTIVATE = (OrgStatus.SUSPENDED, OrgStatus.ACTIVE, "org.reactivated")


async def _changed(
    session: AsyncSession, ctx: Context, action: str, org_id: str, data: dict[str, Any]
) -> None:
    """Audit and announce one change of an org or its keys (same transaction)."""
    await audit.record(session, ctx, action=action, org_id=org_id, target=org_id, details=data)
    await outbox.emit(session, ctx.clock, type=action, org_id=org_id, subject=org_id, data=data)


async def create_org(
    session: AsyncSession, ctx: Context, data: OrgCreate, *, status: OrgStatus = OrgStatus.ACTIVE
) -> Organization:
    """A new org: active when the platform admin creates it, pending when it applies to join."""
    now = ctx.clock.now()
    org = Organization(
        id=data.id,
        display_name=data.display_name,
        status=status.value,
        tier=data.tier.value,
        contact=data.contact.model_dump() if data.contact else None,
        created_at=now,
        updated_at=now,
    )
    session.add(org)
    try:
        await session.flush()
    except IntegrityError:
        raise OrgAlreadyExists(f"organization {data.id!r} already exists") from None
    await _changed(session, ctx, "org.created", org.id, {"tier": org.tier, "status": org.status})
    return org


def require_active(org_id: str, status: str) -> None:
    """Only active orgs authenticate: 403 `ORG_SUSPENDED` or `ORG_NOT_ACTIVE` otherwise."""
    if status == OrgStatus.SUSPENDED.value:
        raise OrgSuspended(f"organization {org_id!r} is suspended", org_id=org_id)
    if status != OrgStatus.ACTIVE.value:
        raise OrgNotActive(f"organization {org_id!r} is {status}, not active", org_id=org_id)


async def get_org(session: AsyncSession, org_id: str) -> Organization:
    org = await session.get(Organization, org_id)
    if org is None:
        raise OrgNotFound(f"no organization {org_id!r}")
    return org


async def lock_org(session: AsyncSession, org_id: str) -> Organization:
    """The org, row-locked until commit so per-org limits can be checked without races.

    (SQLite needs no row lock: its write transactions already run one at a time.)
    """
    statement = select(Organization).where(Organization.id == org_id).with_for_update()
    org = (await session.execute(statement)).scalar_one_or_none()
    if org is None:
        raise OrgNotFound(f"no organization {org_id!r}")
    return org


async def org_ids_with_status(
    session: AsyncSession, org_ids: set[str], status: OrgStatus
) -> set[str]:
    """Which of `org_ids` are in `status`."""
    if not org_ids:
        return set()
    statement = select(Organization.id).where(
        Organization.id.in_(sorted(org_ids)), Organization.status == status.value
    )
    return set((await session.execute(statement)).scalars())


async def list_orgs(
    session: AsyncSession, *, cursor: str | None, limit: int = DEFAULT_LIMIT
) -> tuple[list[Organization], str | None]:
    statement = select(Organization).order_by(Organization.id).limit(limit + 1)
    after = decode_cursor(cursor)
    if after is not None:
        statement = statement.where(Organization.id > str(after))
    rows = list((await session.execute(statement)).scalars())
    return page_of(rows, limit, key=lambda org: org.id)


async def update_org(
    session: AsyncSession, ctx: Context, org_id: str, data: OrgUpdate
) -> Organization:
    org = await get_org(session, org_id)
    changes = data.model_dump(exclude_unset=True, exclude_none=True, mode="json")
    for field, value in changes.items():
        setattr(org, field, value)
    if changes:
        org.updated_at = ctx.clock.now()
        await _changed(session, ctx, "org.updated", org.id, changes)
    return org


async def set_org_status(
    session: AsyncSession, ctx: Context, org_id: str, transition: OrgTransition
) -> Organization:
    """Approve, reject, suspend or reactivate; from any other state it is a 409 naming both."""
    org = await get_org(session, org_id)
    source, status, action = transition.value
    if org.status != source.value:
        raise OrgStateConflict(
            f"organization {org_id!r} is {org.status}; only a {source.value} organization "
            f"can become {status.value}"
        )
    org.status = status.value
    org.updated_at = ctx.clock.now()
    await _changed(session, ctx, action, org.id, {"status": status.value})
    if status is OrgStatus.SUSPENDED:
        await org_suspended.run(session, ctx, org.id)
    return org


async def delete_org(session: AsyncSession, ctx: Context, org_id: str) -> None:
    """Delete an org and its keys; its audit chain stays (audit rows are never deleted).

    Refused (by the domains registered on `before_org_delete`) while it still owns resources.
    """
    org = await get_org(session, org_id)
    await before_org_delete.run(session, ctx, org_id)
    await session.delete(org)
    await session.flush()
    await _changed(session, ctx, "org.deleted", org_id, {})


async def create_api_key(
    session: AsyncSession, ctx: Context, secret_key: bytes, org_id: str, data: ApiKeyCreate
) -> tuple[OrgApiKey, str]:
    """A new key and its secret (returned once; only its keyed digest is stored)."""
    await get_org(session, org_id)
    secret = new_secret(ORG_KEY_PREFIX)
    now = ctx.clock.now()
    key = OrgApiKey(
        id=new_id(),
        org_id=org_id,
        name=data.name,
        prefix=secret[:KEY_DISPLAY_PREFIX_LENGTH],
        digest=keyed_digest(secret_key, secret),
        created_at=now,
        expires_at=now + timedelta(seconds=data.expires_in) if data.expires_in else None,
    )
    session.add(key)
    await _changed(session, ctx, "org.api_key.created", org_id, {"key_id": key.id})
    return key, secret


async def list_api_keys(session: AsyncSession, org_id: str) -> list[OrgApiKey]:
    await get_org(session, org_id)
    statement = select(OrgApiKey).where(OrgApiKey.org_id == org_id).order_by(OrgApiKey.id)
    return list((await session.execute(statement)).scalars())


async def revoke_api_key(session: AsyncSession, ctx: Context, org_id: str, key_id: str) -> None:
    statement = select(OrgApiKey).where(OrgApiKey.id == key_id, OrgApiKey.org_id == org_id)
    key = (await session.execute(statement)).scalar_one_or_none()
    if key is None or key.revoked_at is not None:
        raise ApiKeyNotFound(f"no active API key {key_id!r}")
    key.revoked_at = ctx.clock.now()
    await _changed(session, ctx, "org.api_key.revoked", org_id, {"key_id": key_id})
