"""Certificate revocation: by (issuing CA, serial) — before or after the certificate's first
use, whether or not Tabard issued it — or a registered certificate by its id. Revoking ends the
tokens issued from (or bound to) the certificate at once, on every replica (`certificate_revoked`
hook), and the certificate's next login answers `CERTIFICATE_REVOKED`.

Each CA publishes a signed DER CRL (RFC 5280 §5) valid for an hour, and the org a JSON list.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.context import Context
from tabard.core.errors import InvalidField
from tabard.core.ids import new_id
from tabard.core.keystore import KeyStore
from tabard.core.pagination import DEFAULT_LIMIT, decode_cursor, page_of
from tabard.pki import certs
from tabard.pki.authorities import get_ca, issuing_certificate, issuing_key
from tabard.pki.errors import CertificateAlreadyRevoked, CertificateNotFound
from tabard.pki.models import AgentCertificate, CertificateAuthority, CertificateRevocation
from tabard.pki.schemas import CertificateStatus, RevocationCreate, RevocationReason
from tabard.pki.service import CertificateRef, certificate_key, certificate_revoked, record_change
from tabard.registry import service as registry

CRL_VALIDITY = timedelta(hours=1)
# A signed CRL is served again for this long while its CA's revocations stay the same: as long
# as the endpoint's Cache-Control lets any cache keep it.
CRL_REUSE = timedelta(minutes=5)
_MAX_CACHED_CRLS = 10_000
# What a cached CRL was built from: the CA's status, and its revocations' count and newest id.
_CrlVersion = tuple[str, int, str | None]


async def revoke(
    session: AsyncSession, ctx: Context, org_id: str, data: RevocationCreate
) -> CertificateRevocation:
    """Revoke one certificate of the org; revoking it twice is a 409."""
    row: AgentCertificate | None
    if data.certificate_id is not None:
        if data.ca_id is not None or data.serial is not None:
            raise InvalidField("body", "name the certificate by certificate_id or by ca_id+serial")
        row = await _certificate_by_id(session, org_id, data.certificate_id)
        ca_id, serial = row.ca_id, row.serial
    else:
        if data.ca_id is None or data.serial is None:
            raise InvalidField("body", "send ca_id and serial (or certificate_id)")
        ca_id, serial = (await get_ca(session, org_id, data.ca_id)).id, _serial(data.serial)
        row = await _certificate_by_serial(session, ca_id, serial)
    revocation = CertificateRevocation(
        id=new_id(),
        org_id=org_id,
        ca_id=ca_id,
        serial=serial,
        certificate_id=row.id if row else None,
        agent_id=row.agent_id if row else None,
        reason=data.reason.value,
        revoked_at=ctx.clock.now(),
    )
    try:
        async with session.begin_nested():
            session.add(revocation)
    except IntegrityError:
        raise CertificateAlreadyRevoked(
            f"the certificate (CA {ca_id}, serial {serial}) is already revoked"
        ) from None
    if row is not None:
        row.status, row.revoked_at = CertificateStatus.REVOKED.value, revocation.revoked_at
        row.revocation_reason = data.reason.value
    thumbprint = row.thumbprint if row else ""
    details = {
        "revocation_id": revocation.id,
        "ca_id": ca_id,
        "serial": serial,
        "certificate_id": revocation.certificate_id,
        "agent_id": revocation.agent_id,
        "reason": data.reason.value,
    }
    await record_change(session, ctx, "certificate.revoked", org_id, revocation.id, details)
    key = certificate_key(ca_id, serial, thumbprint)
    await certificate_revoked.run(session, ctx, CertificateRef(org_id, key))
    return revocation


async def revoke_agent_certificates(
    session: AsyncSession, ctx: Context, agent: registry.AgentRef
) -> None:
    """`registry.agent_retired` handler: a decommissioned agent's certificates are revoked
    (`cessationOfOperation`), so CRLs say so too."""
    org_id, agent_id = agent.org_id, agent.id
    statement = select(AgentCertificate.id).where(
        AgentCertificate.org_id == org_id,
        AgentCertificate.agent_id == agent_id,
        AgentCertificate.status == CertificateStatus.ACTIVE.value,
    )
    for certificate_id in list((await session.execute(statement)).scalars()):
        reason = RevocationReason.CESSATION_OF_OPERATION
        await revoke(
            session, ctx, org_id, RevocationCreate(certificate_id=certificate_id, reason=reason)
        )


async def is_revoked(
    session: AsyncSession, ca_id: str | None, serial: str, certificate_id: str | None
) -> bool:
    """Whether the certificate named by (CA, serial) — or, self-signed, by id — is revoked."""
    if ca_id is not None:
        statement = select(CertificateRevocation.id).where(
            CertificateRevocation.ca_id == ca_id, CertificateRevocation.serial == serial
        )
    elif certificate_id is not None:
        statement = select(CertificateRevocation.id).where(
            CertificateRevocation.certificate_id == certificate_id
        )
    else:
        return False
    return (await session.execute(statement.limit(1))).first() is not None


async def list_revocations(
    session: AsyncSession,
    org_id: str,
    *,
    ca_id: str | None = None,
    agent_id: str | None = None,
    reason: RevocationReason | None = None,
    since: datetime | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> tuple[list[CertificateRevocation], str | None]:
    """The org's revocations, newest first, filtered; keyset pages by id."""
    statement = select(CertificateRevocation).where(CertificateRevocation.org_id == org_id)
    if ca_id is not None:
        statement = statement.where(CertificateRevocation.ca_id == ca_id)
    if agent_id is not None:
        statement = statement.where(CertificateRevocation.agent_id == agent_id)
    if reason is not None:
        statement = statement.where(CertificateRevocation.reason == reason.value)
    if since is not None:
        statement = statement.where(CertificateRevocation.revoked_at >= since)
    after = decode_cursor(cursor)
    if after is not None:
        statement = statement.where(CertificateRevocation.id < str(after))
    statement = statement.order_by(CertificateRevocation.id.desc()).limit(limit + 1)
    rows = list((await session.execute(statement)).scalars())
    return page_of(rows, limit, key=lambda row: row.id)


async def crl_of(
    session: AsyncSession, keystore: KeyStore, ca: CertificateAuthority, now: datetime
) -> bytes:
    """The CA's current CRL: every serial revoked under it (replaced CAs included), signed by
    its issuing key, valid for an hour."""
    statement = select(CertificateRevocation).where(CertificateRevocation.ca_id == ca.id)
    revoked = [
        (int(row.serial, 16), row.revoked_at, x509.ReasonFlags(row.reason))
        for row in (await session.execute(statement)).scalars()
    ]
    return certs.build_crl(
        issuing_certificate(ca),
        issuing_key(keystore, ca),
        revoked,
        now=now,
        next_update=now + CRL_VALIDITY,
        number=int(now.timestamp() * 1000),
    )


class CrlCache:
    """The last CRL built per CA, served again while the CA's revocations are unchanged.

    Building and signing a CRL costs ~40 µs a serial in Python (40 ms for a thousand), and
    relying parties fetch it often. Whether it changed is one indexed query (the count and the
    newest id of the CA's revocations, ids being time-ordered), so a revocation made through any
    replica is in the next CRL every replica serves.
    """

    def __init__(self, reuse: timedelta = CRL_REUSE) -> None:
        self._reuse = reuse
        self._built: dict[str, tuple[_CrlVersion, datetime, bytes]] = {}

    async def crl(
        self, session: AsyncSession, keystore: KeyStore, ca: CertificateAuthority, now: datetime
    ) -> bytes:
        count, newest = await _revocations_version(session, ca.id)
        version = (ca.status, count, newest)
        cached = self._built.get(ca.id)
        if cached is not None and cached[0] == version and now - cached[1] < self._reuse:
            return cached[2]
        der = await crl_of(session, keystore, ca, now)
        if len(self._built) >= _MAX_CACHED_CRLS:
            self._built.clear()
        self._built[ca.id] = (version, now, der)
        return der


async def _revocations_version(session: AsyncSession, ca_id: str) -> tuple[int, str | None]:
    statement = select(func.count(), func.max(CertificateRevocation.id)).where(
        CertificateRevocation.ca_id == ca_id
    )
    count, newest = (await session.execute(statement)).one()
    return int(count), newest


def _serial(text: str) -> str:
    try:
        return format(certs.parse_serial(text), "x")
    except ValueError as exc:
        raise InvalidField("body.serial", str(exc)) from None


async def _certificate_by_id(
    session: AsyncSession, org_id: str, certificate_id: str
) -> AgentCertificate:
    statement = select(AgentCertificate).where(
        AgentCertificate.id == certificate_id, AgentCertificate.org_id == org_id
    )
    row = (await session.execute(statement)).scalar_one_or_none()
    if row is None:
        raise CertificateNotFound(f"no certificate {certificate_id!r}")
    return row


async def _certificate_by_serial(
    session: AsyncSession, ca_id: str, serial: str
) -> AgentCertificate | None:
    statement = select(AgentCertificate).where(
        AgentCertificate.ca_id == ca_id, AgentCertificate.serial == serial
    )
    return (await session.execute(statement)).scalar_one_or_none()
