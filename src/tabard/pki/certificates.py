"""Agent certificates (X.509-SVIDs): issued by Tabard from a CSR, or registered by the org
(issued under its CA, or self-signed for RFC 8705 §2.2), and the one certificate each agent may
log in with (its pin).

An issued SVID carries exactly one URI SAN, the agent's SPIFFE ID, CA=false, EKU clientAuth, a
CRL distribution point, and lives as long as the org's certificate lifetime (24 h by default,
at most 90 days, never past its CA).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.clock import Clock
from tabard.core.config import Settings
from tabard.core.context import Context
from tabard.core.ids import new_id
from tabard.core.keystore import KeyStore
from tabard.pki import certs, validation
from tabard.pki.authorities import (
    anchor_of,
    get_ca,
    intermediates_of,
    issuing_certificate,
    issuing_key,
    list_cas,
)
from tabard.pki.errors import (
    CaReplaced,
    CertificateNotFound,
    CertificateRefused,
    InvalidCertificate,
    NoActiveCa,
    PinNotFound,
)
from tabard.pki.models import AgentCertificate, CertificateAuthority, CertificatePin
from tabard.pki.revocations import is_revoked
from tabard.pki.schemas import (
    CaStatus,
    CertificateRequest,
    CertificateSource,
    CertificateStatus,
)
from tabard.pki.service import pin_changed, record_change
from tabard.pki.settings import settings_for
from tabard.pki.spiffe import agent_spiffe_id
from tabard.registry import service as registry
from tabard.registry.service import AgentRef

EXPIRING_SOON = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class StoredCertificate:
    """A certificate row with the chain up to its CA's anchor, and whether it is pinned."""

    row: AgentCertificate
    chain_pem: str
    pinned: bool


async def submit_certificate(
    session: AsyncSession,
    ctx: Context,
    settings: Settings,
    keystore: KeyStore,
    org_id: str,
    agent_id: str,
    data: CertificateRequest,
) -> StoredCertificate:
    """Sign the agent's CSR, or register a certificate the org made; pin it when asked."""
    if (data.csr_pem is None) == (data.certificate_pem is None):
        raise InvalidCertificate("body_invalid", "send exactly one of csr_pem or certificate_pem")
    agent = await registry.get_mutable_agent(session, org_id, agent_id)
    spiffe_id = agent_spiffe_id(settings.resolved_trust_domain, org_id, agent.name)
    if data.csr_pem is not None:
        row, chain = await _issue(session, ctx, settings, keystore, agent, spiffe_id, data)
    else:
        row, chain = await _register(session, ctx, agent, spiffe_id, data.certificate_pem or "")
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        raise InvalidCertificate(
            "already_registered", "this certificate (or its CA and serial) is already registered"
        ) from None
    details = {
        "agent_id": agent.id,
        "certificate_id": row.id,
        "ca_id": row.ca_id,
        "serial": row.serial,
        "source": row.source,
        "not_after": row.not_after.isoformat(),
    }
    await record_change(session, ctx, f"certificate.{row.source}", org_id, row.id, details)
    if data.pin:
        await _pin(session, ctx, row, pinned_by="api")
    return StoredCertificate(row, chain, data.pin)


async def _issue(
    session: AsyncSession,
    ctx: Context,
    settings: Settings,
    keystore: KeyStore,
    agent: Any,
    spiffe_id: str,
    data: CertificateRequest,
) -> tuple[AgentCertificate, str]:
    public_key = _csr_key(data.csr_pem or "", spiffe_id)
    ca = await _signing_ca(session, agent.org_id, data.ca_id)
    issuer, key = issuing_certificate(ca), issuing_key(keystore, ca)
    policy = await settings_for(session, settings, agent.org_id)
    lifetime = min(
        data.lifetime_seconds or policy.certificate_lifetime_seconds,
        policy.certificate_lifetime_seconds,
    )
    now = ctx.clock.now()
    # Never past any certificate above it: an anchor may expire before its intermediate.
    chain = _chain_above(ca)
    not_after = min(now + timedelta(seconds=lifetime), *(c.not_valid_after_utc for c in chain))
    leaf = certs.build_svid(
        issuer,
        key,
        public_key,
        spiffe_id=spiffe_id,
        common_name=agent.name,
        not_before=now - certs.BACKDATE,
        not_after=not_after,
        crl_url=f"{settings.public_url}/pki/cas/{ca.id}/crl",
    )
    row = _row(agent, leaf, ca.id, CertificateSource.ISSUED, now)
    return row, certs.to_pem(chain)


async def _register(
    session: AsyncSession, ctx: Context, agent: Any, spiffe_id: str, pem: str
) -> tuple[AgentCertificate, str]:
    try:
        leaf, *intermediates = certs.load_certificates(pem)
    except ValueError as exc:
        raise InvalidCertificate("pem_invalid", str(exc)) from None
    now = ctx.clock.now()
    try:
        validation.check_leaf(leaf, now)
        if validation.spiffe_id_of(leaf)[0] != spiffe_id:
            raise CertificateRefused(
                "CERTIFICATE_SPIFFE_ID_MISMATCH", f"the certificate's SPIFFE ID must be {spiffe_id}"
            )
        if validation.is_self_signed(leaf):
            return _row(agent, leaf, None, CertificateSource.SELF_SIGNED, now), ""
        active = await list_cas(session, agent.org_id, status=CaStatus.ACTIVE)
        replaced = await list_cas(session, agent.org_id, status=CaStatus.REPLACED)
        chained = validation.chain_to_org(leaf, intermediates, active, replaced, now)
        # A serial revoked before its first use stays revoked: registering it must not revive it.
        if await is_revoked(session, chained.ca.id, certs.serial_hex(leaf), None):
            raise CertificateRefused("CERTIFICATE_REVOKED")
    except CertificateRefused as refusal:
        raise InvalidCertificate(refusal.code.lower(), refusal.description) from None
    row = _row(agent, leaf, chained.ca.id, CertificateSource.REGISTERED, now)
    return row, certs.to_pem(chained.chain)


def _csr_key(pem: str, spiffe_id: str) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """The CSR's public key, once its signature proves possession and its key is strong."""
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except ValueError:
        raise InvalidCertificate(
            "csr_invalid", "csr_pem is not a PEM certificate request"
        ) from None
    if not csr.is_signature_valid:
        raise InvalidCertificate("csr_signature_invalid", "the CSR's signature does not verify")
    key = csr.public_key()
    problem = certs.key_problem(key)
    if problem is not None or not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise InvalidCertificate("weak_key", f"the CSR has an {problem}")
    try:
        requested = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = requested.value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if any(uri != spiffe_id for uri in uris):
        raise InvalidCertificate(
            "spiffe_id_mismatch", f"the CSR asks for another URI SAN; this agent's is {spiffe_id}"
        )
    return key


async def _signing_ca(
    session: AsyncSession, org_id: str, ca_id: str | None
) -> CertificateAuthority:
    if ca_id is not None:
        ca = await get_ca(session, org_id, ca_id)
        if ca.status != CaStatus.ACTIVE.value:
            raise CaReplaced(f"CA {ca_id!r} was replaced by {ca.replaced_by!r}")
        return ca
    signers = [
        ca for ca in await list_cas(session, org_id, status=CaStatus.ACTIVE) if ca.sealed_key
    ]
    if not signers:
        raise NoActiveCa(
            f"organization {org_id!r} has no active CA whose key Tabard holds; create one "
            "(POST /v1/orgs/{org}/cas) or register certificates you issue yourself"
        )
    return max(signers, key=lambda ca: ca.created_at)


def _chain_above(ca: CertificateAuthority) -> list[x509.Certificate]:
    """The issuing CA up to and including the anchor: what follows the leaf in a chain."""
    return [*intermediates_of(ca), anchor_of(ca)]


def _row(
    agent: Any,
    leaf: x509.Certificate,
    ca_id: str | None,
    source: CertificateSource,
    now: datetime,
) -> AgentCertificate:
    return AgentCertificate(
        id=new_id(),
        org_id=agent.org_id,
        agent_id=agent.id,
        ca_id=ca_id,
        source=source.value,
        status=CertificateStatus.ACTIVE.value,
        serial=certs.serial_hex(leaf),
        thumbprint=certs.thumbprint(leaf),
        spiffe_id=certs.uri_names(leaf)[0],
        key_algorithm=certs.key_algorithm(leaf.public_key()),
        certificate_pem=certs.to_pem([leaf]),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        created_at=now,
    )


async def list_certificates(
    session: AsyncSession, org_id: str, agent_id: str
) -> list[StoredCertificate]:
    await registry.get_agent(session, org_id, agent_id)
    statement = (
        select(AgentCertificate)
        .where(AgentCertificate.org_id == org_id, AgentCertificate.agent_id == agent_id)
        .order_by(AgentCertificate.id)
    )
    pin = await session.get(CertificatePin, agent_id)
    return [
        StoredCertificate(row, "", pin is not None and pin.thumbprint == row.thumbprint)
        for row in (await session.execute(statement)).scalars()
    ]


async def get_certificate(
    session: AsyncSession, org_id: str, agent_id: str, certificate_id: str
) -> AgentCertificate:
    statement = select(AgentCertificate).where(
        AgentCertificate.id == certificate_id,
        AgentCertificate.org_id == org_id,
        AgentCertificate.agent_id == agent_id,
    )
    row = (await session.execute(statement)).scalar_one_or_none()
    if row is None:
        raise CertificateNotFound(f"no certificate {certificate_id!r}")
    return row


async def stored_certificate(
    session: AsyncSession, org_id: str, agent_id: str, certificate_id: str
) -> StoredCertificate:
    row = await get_certificate(session, org_id, agent_id, certificate_id)
    pin = await session.get(CertificatePin, agent_id)
    chain = ""
    if row.ca_id is not None:
        chain = certs.to_pem(_chain_above(await get_ca(session, org_id, row.ca_id)))
    return StoredCertificate(row, chain, pin is not None and pin.thumbprint == row.thumbprint)


# Pins ------------------------------------------------------------------------------------------


async def get_pin(session: AsyncSession, org_id: str, agent_id: str) -> CertificatePin:
    await registry.get_agent(session, org_id, agent_id)
    pin = await session.get(CertificatePin, agent_id)
    if pin is None:
        raise PinNotFound(f"agent {agent_id!r} has no pinned certificate yet")
    return pin


async def set_pin(
    session: AsyncSession, ctx: Context, org_id: str, agent_id: str, certificate_id: str
) -> CertificatePin:
    """Rotate the agent's login certificate to `certificate_id` (an active one of the agent)."""
    await registry.get_mutable_agent(session, org_id, agent_id)
    row = await get_certificate(session, org_id, agent_id, certificate_id)
    if row.status != CertificateStatus.ACTIVE.value:
        raise InvalidCertificate(
            "certificate_revoked", f"certificate {certificate_id!r} is revoked"
        )
    return await _pin(session, ctx, row, pinned_by="api")


async def clear_pin(session: AsyncSession, ctx: Context, org_id: str, agent_id: str) -> None:
    """Forget the pin: the agent's next certificate login pins whatever valid certificate it
    presents."""
    pin = await get_pin(session, org_id, agent_id)
    await session.delete(pin)
    details = {"agent_id": agent_id, "thumbprint": pin.thumbprint}
    await record_change(session, ctx, "certificate.pin.cleared", org_id, agent_id, details)
    await pin_changed.run(session, ctx, AgentRef(agent_id, org_id))


async def pin_at_first_login(
    session: AsyncSession,
    ctx: Context,
    *,
    org_id: str,
    agent_id: str,
    thumbprint: str,
    ca_id: str | None,
) -> None:
    """Pin the certificate of an agent's first certificate login; a concurrent first login
    with another certificate loses (`CERTIFICATE_MISMATCH`)."""
    existing = await session.get(CertificatePin, agent_id)
    if existing is None:
        certificate_id = (
            await session.execute(
                select(AgentCertificate.id).where(
                    AgentCertificate.thumbprint == thumbprint, AgentCertificate.org_id == org_id
                )
            )
        ).scalar_one_or_none()
        pin = CertificatePin(
            agent_id=agent_id,
            org_id=org_id,
            thumbprint=thumbprint,
            certificate_id=certificate_id,
            ca_id=ca_id,
            pinned_by="first_login",
            pinned_at=ctx.clock.now(),
        )
        try:
            async with session.begin_nested():
                session.add(pin)
        except IntegrityError:
            existing = await session.get(CertificatePin, agent_id, populate_existing=True)
        else:
            details = {"agent_id": agent_id, "thumbprint": thumbprint, "by": "first_login"}
            await record_change(session, ctx, "certificate.pinned", org_id, agent_id, details)
            return
    if existing is not None and existing.thumbprint != thumbprint:
        raise CertificateRefused("CERTIFICATE_MISMATCH", org_id=org_id)


async def _pin(
    session: AsyncSession, ctx: Context, row: AgentCertificate, *, pinned_by: str
) -> CertificatePin:
    await session.execute(delete(CertificatePin).where(CertificatePin.agent_id == row.agent_id))
    pin = CertificatePin(
        agent_id=row.agent_id,
        org_id=row.org_id,
        thumbprint=row.thumbprint,
        certificate_id=row.id,
        ca_id=row.ca_id,
        pinned_by=pinned_by,
        pinned_at=ctx.clock.now(),
    )
    session.add(pin)
    details = {"agent_id": row.agent_id, "certificate_id": row.id, "by": pinned_by}
    await record_change(session, ctx, "certificate.pinned", row.org_id, row.agent_id, details)
    await pin_changed.run(session, ctx, AgentRef(row.agent_id, row.org_id))
    return pin


# Expiry ----------------------------------------------------------------------------------------


async def count_expiring_soon(session: AsyncSession, now: datetime) -> int:
    """Active certificates whose expiry falls within the next 7 days."""
    statement = select(func.count()).where(
        AgentCertificate.status == CertificateStatus.ACTIVE.value,
        AgentCertificate.not_after > now,
        AgentCertificate.not_after <= now + EXPIRING_SOON,
    )
    return int((await session.execute(statement)).scalar_one())


async def announce_expiring(session: AsyncSession, ctx: Context, clock: Clock) -> int:
    """Raise `certificate.expiring` once per certificate entering its last 7 days."""
    now = clock.now()
    statement = (
        select(AgentCertificate)
        .where(
            AgentCertificate.status == CertificateStatus.ACTIVE.value,
            AgentCertificate.not_after > now,
            AgentCertificate.not_after <= now + EXPIRING_SOON,
            AgentCertificate.expiring_notified_at.is_(None),
        )
        .order_by(AgentCertificate.not_after)
        .limit(500)
    )
    rows = list((await session.execute(statement)).scalars())
    for row in rows:
        row.expiring_notified_at = now
        details = {
            "agent_id": row.agent_id,
            "certificate_id": row.id,
            "serial": row.serial,
            "not_after": row.not_after.isoformat(),
        }
        await record_change(session, ctx, "certificate.expiring", row.org_id, row.id, details)
    return len(rows)
