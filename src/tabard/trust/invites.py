"""Onboarding invites: how organizations come to Tabard.

The platform admin issues single-use invites (TTL 1 hour to 365 days, a label, stored as the
SHA-256 of the secret, shown once) of two kinds that are not interchangeable:
- *join*: a new org applies with its display name, contact and optionally its CA; it stays
  `pending` until the admin approves (`active`) or rejects it;
- *attach*: for an org the admin created, which attaches its CA and receives its first key.
Inspecting an invite does not use it. An unknown, used, expired, revoked or wrong-kind invite
is 403 `INVITE_INVALID` and changes nothing; the use and everything it creates commit together.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.context import Context
from tabard.core.ids import INVITE_PREFIX, new_id, new_secret
from tabard.core.keystore import KeyStore
from tabard.pki import authorities
from tabard.pki.schemas import CaCreate
from tabard.tenancy import service as tenancy
from tabard.tenancy.errors import OrgStateConflict
from tabard.tenancy.schemas import ApiKeyCreate, OrgCreate, OrgStatus
from tabard.trust.errors import InviteInvalid, InviteNotFound, InviteStateConflict
from tabard.trust.models import OrgInvite
from tabard.trust.schemas import (
    AttachRequest,
    InviteCreate,
    InviteKind,
    InviteStatus,
    JoinRequest,
)
from tabard.trust.service import record_change

FIRST_KEY_NAME = "onboarding"


@dataclass(frozen=True, slots=True)
class OnboardedOrg:
    """What onboarding made: the org, its first API key and that key's secret, its CA."""

    org: Any
    key: Any
    secret: str
    ca: Any


def invite_status(invite: OrgInvite, now: datetime) -> InviteStatus:
    if invite.revoked_at is not None:
        return InviteStatus.REVOKED
    if invite.used_at is not None:
        return InviteStatus.USED
    if invite.expires_at <= now:
        return InviteStatus.EXPIRED
    return InviteStatus.ACTIVE


async def create_invite(
    session: AsyncSession, ctx: Context, data: InviteCreate
) -> tuple[OrgInvite, str]:
    """A new invite and its secret (returned once; only its SHA-256 is stored)."""
    if data.org_id is not None:
        org = await tenancy.get_org(session, data.org_id)
        if org.status != OrgStatus.ACTIVE.value:
            raise OrgStateConflict(
                f"organization {org.id!r} is {org.status}; attach invites are for active orgs"
            )
    secret = new_secret(INVITE_PREFIX)
    now = ctx.clock.now()
    invite = OrgInvite(
        id=new_id(),
        kind=data.kind.value,
        label=data.label,
        org_id=data.org_id,
        digest=_digest(secret),
        created_at=now,
        expires_at=now + timedelta(seconds=data.expires_in),
    )
    session.add(invite)
    await _changed(session, ctx, "invite.created", invite)
    return invite, secret


async def list_invites(session: AsyncSession) -> list[OrgInvite]:
    statement = select(OrgInvite).order_by(OrgInvite.id.desc())
    return list((await session.execute(statement)).scalars())


async def get_invite(session: AsyncSession, invite_id: str) -> OrgInvite:
    invite = await session.get(OrgInvite, invite_id)
    if invite is None:
        raise InviteNotFound(f"no invite {invite_id!r}")
    return invite


async def revoke_invite(session: AsyncSession, ctx: Context, invite_id: str) -> OrgInvite:
    invite = await get_invite(session, invite_id)
    status = invite_status(invite, ctx.clock.now())
    if status in (InviteStatus.USED, InviteStatus.REVOKED):
        raise InviteStateConflict(f"invite {invite_id!r} is already {status.value}")
    invite.revoked_at = ctx.clock.now()
    await _changed(session, ctx, "invite.revoked", invite)
    return invite


async def inspect_invite(session: AsyncSession, secret: str, now: datetime) -> OrgInvite:
    """The invite behind `secret` if it could be used now; it stays unused."""
    invite = await _by_secret(session, secret)
    if invite is None or invite_status(invite, now) is not InviteStatus.ACTIVE:
        raise InviteInvalid(_why(invite, now))
    return invite


async def join(
    session: AsyncSession, ctx: Context, keystore: KeyStore, secret_key: bytes, data: JoinRequest
) -> OnboardedOrg:
    """A new org applies: created `pending` with its contact (and CA), plus its first key,
    which works once the admin approves the org."""
    invite = await _use(session, ctx, data.invite, InviteKind.JOIN)
    applicant = OrgCreate(
        id=data.org.id, display_name=data.org.display_name, contact=data.org.contact
    )
    org = await tenancy.create_org(session, ctx, applicant, status=OrgStatus.PENDING)
    invite.org_id = org.id
    return await _onboarded(session, ctx, keystore, secret_key, org, data.ca, invite)


async def attach(
    session: AsyncSession,
    ctx: Context,
    keystore: KeyStore,
    secret_key: bytes,
    data: AttachRequest,
) -> OnboardedOrg:
    """The org named by the invite attaches its CA and receives its first key."""
    invite = await _use(session, ctx, data.invite, InviteKind.ATTACH)
    org = await tenancy.get_org(session, str(invite.org_id))
    return await _onboarded(session, ctx, keystore, secret_key, org, data.ca, invite)


async def _onboarded(
    session: AsyncSession,
    ctx: Context,
    keystore: KeyStore,
    secret_key: bytes,
    org: Any,
    ca_request: CaCreate | None,
    invite: OrgInvite,
) -> OnboardedOrg:
    ca = None
    if ca_request is not None:
        ca = await authorities.create_ca(session, ctx, keystore, org.id, ca_request)
    key, secret = await tenancy.create_api_key(
        session, ctx, secret_key, org.id, ApiKeyCreate(name=FIRST_KEY_NAME)
    )
    await _changed(session, ctx, "invite.used", invite)
    return OnboardedOrg(org, key, secret, ca)


async def _use(session: AsyncSession, ctx: Context, secret: str, kind: InviteKind) -> OrgInvite:
    """Consume the invite atomically: of two concurrent uses, exactly one succeeds."""
    now = ctx.clock.now()
    invite = await _by_secret(session, secret)
    if invite is None or invite.kind != kind.value:
        raise InviteInvalid(_why(invite, now, expected=kind))
    consumed = await session.execute(
        update(OrgInvite)
        .where(
            OrgInvite.id == invite.id,
            OrgInvite.used_at.is_(None),
            OrgInvite.revoked_at.is_(None),
            OrgInvite.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if getattr(consumed, "rowcount", 0) != 1:
        raise InviteInvalid(_why(invite, now))
    await session.refresh(invite)
    return invite


async def _by_secret(session: AsyncSession, secret: str) -> OrgInvite | None:
    statement = select(OrgInvite).where(OrgInvite.digest == _digest(secret))
    return (await session.execute(statement)).scalar_one_or_none()


def _why(invite: OrgInvite | None, now: datetime, expected: InviteKind | None = None) -> str:
    if invite is None:
        return "the invite is not known"
    if expected is not None and invite.kind != expected.value:
        return f"this is a {invite.kind} invite, not a {expected.value} invite"
    return f"the invite is {invite_status(invite, now).value}"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def _changed(session: AsyncSession, ctx: Context, action: str, invite: OrgInvite) -> None:
    details = {"invite_id": invite.id, "kind": invite.kind, "label": invite.label}
    await record_change(session, ctx, action, invite.org_id, invite.id, details)
