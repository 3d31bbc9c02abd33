"""Token revocation that bites at once, on every replica (RFC 7009 for the endpoint's part).

A revocation is a row (`kind`, `value`): one token (`jti`), a delegation chain, everything issued
before a moment to an agent, a credential (`client`), an org, under a signing key (`kid`), from
an agent certificate (`cert`) or any certificate of a CA (`ca`), or to an agent whose binding
was withdrawn (`binding`: refused with 403 `BINDING_REVOKED` rather than 401). The
database is the record, so losing the kv store never revives a token; the kv store is the fast
path every verification reads in one round trip. Writers put the kv entry before their
transaction commits, so no replica can see the commit without the entry. A replica catches up
from the database whenever its `rev:fresh` marker has lapsed (every `revocation_sync_seconds`)
or the kv store was emptied, which also repairs entries written by processes that could not
reach this kv store (the CLI against an in-process store).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit import service as audit
from tabard.core import outbox
from tabard.core.clock import Clock
from tabard.core.context import Context
from tabard.core.db import Database
from tabard.core.kv import KeyValueStore
from tabard.core.metrics import TOKENS_REVOKED
from tabard.core.singleflight import SingleFlight
from tabard.pki.service import CaRef, CertificateRef, ca_of_certificate_key
from tabard.tokens.models import TokenRevocation

_FRESH = "rev:fresh"
_SYNCED_AT = "rev:synced_at"
# Rows committed by slow transactions may carry a created_at older than the last sync.
_SYNC_OVERLAP = timedelta(seconds=60)


class RevocationKind(StrEnum):
    JTI = "jti"
    CHAIN = "chain"
    AGENT = "agent"
    CLIENT = "client"
    ORG = "org"
    KID = "kid"
    CERT = "cert"
    CA = "ca"
    BINDING = "binding"


# These kinds kill everything issued before the revocation; the others name exact tokens.
_BY_TIME = frozenset(
    {RevocationKind.AGENT, RevocationKind.CLIENT, RevocationKind.ORG, RevocationKind.BINDING}
)


def revocation_key(kind: RevocationKind, value: str) -> str:
    """The kv key of a revocation entry (its value: the cut-off time, or 0 for exact kinds)."""
    return _key(kind, value)


def _key(kind: str, value: str) -> str:
    return f"rev:{kind}:{value}"


async def revoke(
    session: AsyncSession,
    ctx: Context,
    kind: RevocationKind,
    value: str,
    *,
    org_id: str | None,
    expires_at: datetime,
    reason: str,
) -> bool:
    """Revoke (`kind`, `value`) until `expires_at`; False when it was already revoked for good.

    Time-based kinds move their cut-off to now on every call (a reactivated agent revoked again).
    The audit event and the outbox event are written in the caller's transaction.
    """
    now = ctx.clock.now()
    row = await session.get(TokenRevocation, (kind.value, value))
    if row is not None and kind not in _BY_TIME:
        return False
    if ctx.kv is not None:  # before the commit: no replica may see the row without the entry
        ttl = max(1.0, (expires_at - now).total_seconds())
        await ctx.kv.set(_key(kind, value), _cutoff(now, kind), ttl_seconds=ttl)
    if row is None:
        session.add(
            TokenRevocation(
                kind=kind.value,
                value=value,
                org_id=org_id,
                revoked_before=now,
                expires_at=expires_at,
                reason=reason,
                created_at=now,
            )
        )
    else:
        row.revoked_before, row.reason, row.created_at = now, reason, now
        row.expires_at = max(row.expires_at, expires_at)
    TOKENS_REVOKED.labels(kind.value).inc()
    details = {"kind": kind.value, "value": value, "reason": reason}
    await audit.record(
        session, ctx, action="token.revoked", org_id=org_id, target=value, details=details
    )
    await outbox.emit(
        session, ctx.clock, type="token.revoked", org_id=org_id, subject=value, data=details
    )
    return True


async def list_revocations(
    session: AsyncSession, org_id: str, now: datetime
) -> list[TokenRevocation]:
    """The org's revocations that still matter (newest first)."""
    statement = (
        select(TokenRevocation)
        .where(TokenRevocation.org_id == org_id, TokenRevocation.expires_at > now)
        .order_by(TokenRevocation.created_at.desc())
    )
    return list((await session.execute(statement)).scalars())


# Time-based revocations matter until every token issued before them has expired: no access
# token lives longer than a day (the bound of the lifetime settings), plus verification leeway.
LONGEST_TOKEN_LIFETIME = timedelta(days=1, minutes=1)


async def revoke_agent_tokens(session: AsyncSession, ctx: Context, agent: Any) -> None:
    """`registry.agent_suspended` / `agent_retired` handler: the agent's live tokens die."""
    await _revoke_issued_so_far(session, ctx, RevocationKind.AGENT, agent.id, agent.org_id)


async def revoke_client_tokens(session: AsyncSession, ctx: Context, credential: Any) -> None:
    """`credentials.credential_revoked` handler: tokens issued to the credential die."""
    kind, value = RevocationKind.CLIENT, credential.client_id
    await _revoke_issued_so_far(session, ctx, kind, value, credential.org_id)


async def revoke_org_tokens(session: AsyncSession, ctx: Context, org_id: str) -> None:
    """`tenancy.org_suspended` handler: every token of the org's agents dies."""
    await _revoke_issued_so_far(session, ctx, RevocationKind.ORG, org_id, org_id)


async def revoke_key_tokens(session: AsyncSession, ctx: Context, kids: list[str]) -> None:
    """`signing.keys_revoked` handler: tokens signed by an emergency-revoked key die."""
    for kid in kids:
        await _revoke_issued_so_far(session, ctx, RevocationKind.KID, kid, None)


async def revoke_certificate_tokens(
    session: AsyncSession, ctx: Context, certificate: CertificateRef
) -> None:
    """`pki.certificate_revoked` handler: tokens issued from the certificate (or derived from
    such tokens) die."""
    kind, value = RevocationKind.CERT, certificate.key
    await _revoke_issued_so_far(session, ctx, kind, value, certificate.org_id)


async def revoke_ca_tokens(session: AsyncSession, ctx: Context, ca: CaRef) -> None:
    """`pki.ca_replaced` handler: tokens issued from any certificate of the CA die."""
    await _revoke_issued_so_far(session, ctx, RevocationKind.CA, ca.ca_id, ca.org_id)


async def revoke_unbound_agent_tokens(session: AsyncSession, ctx: Context, agent: Any) -> None:
    """`trust.binding_withdrawn` handler: the agent's live tokens stop (with 403)."""
    kind, value = RevocationKind.BINDING, agent.id
    await _revoke_issued_so_far(session, ctx, kind, value, agent.org_id)


_HOOK_REASONS = {
    RevocationKind.AGENT: "agent_disabled",
    RevocationKind.CLIENT: "credential_revoked",
    RevocationKind.ORG: "org_suspended",
    RevocationKind.KID: "signing_key_revoked",
    RevocationKind.CERT: "certificate_revoked",
    RevocationKind.CA: "ca_replaced",
    RevocationKind.BINDING: "binding_withdrawn",
}


async def _revoke_issued_so_far(
    session: AsyncSession, ctx: Context, kind: RevocationKind, value: str, org_id: str | None
) -> None:
    expires_at = ctx.clock.now() + LONGEST_TOKEN_LIFETIME
    reason = _HOOK_REASONS[kind]
    await revoke(session, ctx, kind, value, org_id=org_id, expires_at=expires_at, reason=reason)


def _cutoff(now: datetime, kind: RevocationKind) -> bytes:
    # Token `iat` is whole seconds: round up so a token issued in the same second is caught.
    return str(math.ceil(now.timestamp()) if kind in _BY_TIME else 0).encode()


class RevocationList:
    """Answers "is this token revoked?" from the kv store, catching up from the database."""

    def __init__(
        self, database: Database, kv: KeyValueStore, clock: Clock, sync_seconds: float
    ) -> None:
        self._database = database
        self._kv = kv
        self._clock = clock
        self._sync_seconds = sync_seconds
        self._syncs: SingleFlight[str, None] = SingleFlight()

    async def revoked_by(self, subjects: TokenSubjects) -> str | None:
        """The kind of revocation that kills this token, or None when it is live."""
        values = await self.entries(subjects.keys)
        for kind, value in zip(subjects.kinds, values, strict=True):
            if value is not None and (kind not in _BY_TIME or subjects.issued_at < float(value)):
                return kind.value
        return None

    async def entries(self, keys: Sequence[str]) -> list[bytes | None]:
        """The kv values of `keys` (revocation entries, or other markers written the same way),
        read in one round trip once the list is in sync with the database."""
        values = await self._kv.get_many([_FRESH, *keys])
        if values[0] is None:
            await self._syncs.run(_FRESH, self.sync)  # one catch-up for every waiting request
            return await self._kv.get_many(keys)
        return values[1:]

    async def sync(self) -> None:
        """Copy the live revocations created since the last sync (all of them after a kv loss)."""
        now = self._clock.now()
        synced_at = await self._kv.get(_SYNCED_AT)
        statement = select(TokenRevocation).where(TokenRevocation.expires_at > now)
        if synced_at is not None:
            since = datetime.fromtimestamp(float(synced_at), tz=now.tzinfo) - _SYNC_OVERLAP
            statement = statement.where(TokenRevocation.created_at >= since)
        async with self._database.read_only() as session:
            rows = list((await session.execute(statement)).scalars())
        for row in rows:
            ttl = max(1.0, (row.expires_at - now).total_seconds())
            kind = RevocationKind(row.kind)
            await self._kv.set(_key(kind, row.value), _cutoff(row.revoked_before, kind), ttl)
        await self._kv.set(_SYNCED_AT, str(now.timestamp()).encode())
        await self._kv.set(_FRESH, b"1", ttl_seconds=self._sync_seconds)


@dataclass(frozen=True, slots=True)
class TokenSubjects:
    """Everything whose revocation kills one token, as kv keys: computed once per token and
    remembered with it (a fleet presents the same token for minutes)."""

    kinds: tuple[RevocationKind, ...]
    keys: tuple[str, ...]
    issued_at: float


def subjects_of(claims: Mapping[str, Any], kid: str) -> TokenSubjects:
    candidates = list(_candidates(claims, kid))
    return TokenSubjects(
        kinds=tuple(kind for kind, _ in candidates),
        keys=tuple(_key(kind, value) for kind, value in candidates),
        issued_at=float(claims.get("iat", 0)),
    )


def _candidates(claims: Mapping[str, Any], kid: str) -> Iterable[tuple[RevocationKind, str]]:
    yield RevocationKind.JTI, str(claims.get("jti", ""))
    yield RevocationKind.KID, kid
    yield RevocationKind.AGENT, str(claims.get("sub", ""))
    yield RevocationKind.CLIENT, str(claims.get("client_id", ""))
    yield RevocationKind.ORG, str(claims.get("org", ""))
    chain = claims.get("chain_id")
    if isinstance(chain, str):
        yield RevocationKind.CHAIN, chain
    for ancestor in _strings(claims.get("derived_from")):
        yield RevocationKind.JTI, ancestor
    for client in _strings(claims.get("derived_clients")):
        yield RevocationKind.CLIENT, client
    for actor in actor_ids(claims):
        yield RevocationKind.AGENT, actor
    yield RevocationKind.BINDING, str(claims.get("sub", ""))
    certificates = [*_strings(claims.get("derived_certs"))]
    if isinstance(claims.get("cert"), str):
        certificates.append(claims["cert"])
    for key in certificates:
        yield RevocationKind.CERT, key
        ca_id = ca_of_certificate_key(key)
        if ca_id is not None:
            yield RevocationKind.CA, ca_id


def actor_ids(claims: Mapping[str, Any]) -> list[str]:
    """The `sub` of every actor in the nested `act` claim (RFC 8693 §4.1), newest first."""
    actors: list[str] = []
    act = claims.get("act")
    while isinstance(act, Mapping) and len(actors) < 32:
        if isinstance(act.get("sub"), str):
            actors.append(act["sub"])
        act = act.get("act")
    return actors


def _strings(value: object) -> Sequence[str]:
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []
