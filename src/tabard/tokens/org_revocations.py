"""Revocations an organization asks for by id: everything issued so far to one of its agents or
credentials, or a whole delegation chain of its own; the platform admin may also name a `jti`.
A target of another organization is not found (404), never revoked."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.context import Context
from tabard.core.errors import NotFound
from tabard.credentials import service as credentials
from tabard.registry import service as registry
from tabard.tokens.models import DelegationChain, TokenRevocation
from tabard.tokens.revocation import LONGEST_TOKEN_LIFETIME, RevocationKind, revoke
from tabard.tokens.schemas import RevocationCreate, RevocationTarget

_KINDS = {
    RevocationTarget.AGENT: RevocationKind.AGENT,
    RevocationTarget.CLIENT: RevocationKind.CLIENT,
    RevocationTarget.CHAIN: RevocationKind.CHAIN,
    RevocationTarget.JTI: RevocationKind.JTI,
}


async def revoke_for_org(
    session: AsyncSession, ctx: Context, org_id: str, body: RevocationCreate
) -> TokenRevocation:
    """Record the revocation (at once on every replica) and return its row."""
    kind = _KINDS[body.kind]
    expires_at = await _relevant_until(session, ctx.clock.now(), org_id, body)
    await revoke(
        session, ctx, kind, body.value, org_id=org_id, expires_at=expires_at, reason=body.reason
    )
    row = await session.get(TokenRevocation, (kind.value, body.value))
    assert row is not None
    return row


async def _relevant_until(
    session: AsyncSession, now: datetime, org_id: str, body: RevocationCreate
) -> datetime:
    """Until when the revocation may match a live token; 404 unless the target is the org's."""
    if body.kind is RevocationTarget.AGENT:
        await registry.get_agent(session, org_id, body.value)
    elif body.kind is RevocationTarget.CLIENT:
        credential = await credentials.find_by_client_id(session, body.value)
        if credential is None or credential.org_id != org_id:
            raise NotFound(f"no client {body.value!r}")
    elif body.kind is RevocationTarget.CHAIN:
        chain = await session.get(DelegationChain, body.value)
        if chain is None or chain.org_id != org_id:
            raise NotFound(f"no delegation chain {body.value!r}")
        return max(chain.expires_at, now) + LONGEST_TOKEN_LIFETIME
    return now + LONGEST_TOKEN_LIFETIME
