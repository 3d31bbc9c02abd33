"""Certificate login: who a presented agent certificate proves the caller is (RFC 8705 §2 for
`tls_client_auth` and `self_signed_tls_client_auth`; RFC 7523 with an `x5c` header for
`private_key_jwt`). The caller has already proven possession of the certificate's key (the TLS
handshake, or the assertion's signature).

The checks, each with its own refusal code: the SPIFFE ID (one, of this trust domain, matching
the client id when one is given), the path to an active CA of that org (or, self-signed, a
certificate the org registered), validity, key strength, EKU clientAuth, the agent and the org
being active, revocation, then the pin: the first login pins the certificate; another valid
certificate is refused until the org rotates the pin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.pki import certs, validation
from tabard.pki.authorities import list_cas
from tabard.pki.errors import CertificateRefused
from tabard.pki.models import AgentCertificate, CertificatePin
from tabard.pki.revocations import is_revoked
from tabard.pki.schemas import CaStatus, CertificateSource
from tabard.pki.service import certificate_key
from tabard.registry import service as registry
from tabard.registry.errors import AgentNotFound
from tabard.registry.schemas import AgentStatus
from tabard.tenancy import service as tenancy
from tabard.tenancy.errors import OrgNotFound
from tabard.tenancy.schemas import OrgStatus

TLS_CLIENT_AUTH = "tls_client_auth"
SELF_SIGNED_TLS_CLIENT_AUTH = "self_signed_tls_client_auth"


@dataclass(frozen=True, slots=True)
class CertificateLogin:
    """The agent a certificate proves, and what tokens issued from it say about it."""

    org_id: str
    agent_id: str
    spiffe_id: str
    ca_id: str | None
    serial: str
    thumbprint: str
    not_after: datetime
    method: str  # tls_client_auth or self_signed_tls_client_auth (the trust model)
    pinned: bool  # False: the first login, which pins this certificate

    @property
    def certificate_key(self) -> str:
        return certificate_key(self.ca_id, self.serial, self.thumbprint)


async def authenticate_certificate(
    session: AsyncSession,
    trust_domain: str,
    chain: Sequence[x509.Certificate],
    client_id: str | None,
    now: datetime,
) -> CertificateLogin:
    """The login a certificate chain (leaf first, never empty) proves, or `CertificateRefused`."""
    leaf, intermediates = chain[0], chain[1:]
    spiffe_id, parsed = validation.spiffe_id_of(leaf)
    if client_id and client_id != spiffe_id:
        raise CertificateRefused(
            "CERTIFICATE_SPIFFE_ID_MISMATCH",
            f"the certificate speaks for {spiffe_id}, not for {client_id}",
        )
    if parsed.trust_domain != trust_domain:
        raise CertificateRefused(
            "CERTIFICATE_SPIFFE_ID_MISMATCH",
            f"the certificate speaks for {spiffe_id}, outside the trust domain {trust_domain}",
        )
    org_id = parsed.org_id
    try:
        org = await tenancy.get_org(session, org_id)
    except OrgNotFound:
        raise CertificateRefused("CERTIFICATE_UNTRUSTED") from None
    thumbprint = certs.thumbprint(leaf)
    registered = await _registered(session, org_id, thumbprint)
    ca_id, method = await _trust_path(session, org_id, leaf, intermediates, registered, now)
    try:
        validation.check_leaf(leaf, now)
        agent = await _agent(session, org_id, parsed.agent_name)
        _check_active(org_id, org.status, agent.status)
        serial = certs.serial_hex(leaf)
        if await is_revoked(session, ca_id, serial, registered.id if registered else None):
            raise CertificateRefused("CERTIFICATE_REVOKED")
        pin = await session.get(CertificatePin, agent.id)
        if pin is not None and pin.thumbprint != thumbprint:
            raise CertificateRefused("CERTIFICATE_MISMATCH")
    except CertificateRefused as refusal:
        refusal.org_id = org_id  # the org is known now: its audit log records the refusal
        raise
    return CertificateLogin(
        org_id=org_id,
        agent_id=agent.id,
        spiffe_id=spiffe_id,
        ca_id=ca_id,
        serial=serial,
        thumbprint=thumbprint,
        not_after=leaf.not_valid_after_utc,
        method=method,
        pinned=pin is not None,
    )


async def _trust_path(
    session: AsyncSession,
    org_id: str,
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    registered: AgentCertificate | None,
    now: datetime,
) -> tuple[str | None, str]:
    """(CA id, method): the active CA the leaf chains to, or None for a registered
    self-signed certificate."""
    if validation.is_self_signed(leaf):
        if registered is None or registered.source != CertificateSource.SELF_SIGNED.value:
            raise CertificateRefused(
                "CERTIFICATE_UNTRUSTED",
                "a self-signed certificate must be registered by its org first",
                org_id=org_id,
            )
        return None, SELF_SIGNED_TLS_CLIENT_AUTH
    active = await list_cas(session, org_id, status=CaStatus.ACTIVE)
    replaced = await list_cas(session, org_id, status=CaStatus.REPLACED)
    try:
        chained = validation.chain_to_org(leaf, intermediates, active, replaced, now)
    except CertificateRefused as refusal:
        refusal.org_id = org_id
        raise
    return chained.ca.id, TLS_CLIENT_AUTH


async def _registered(
    session: AsyncSession, org_id: str, thumbprint: str
) -> AgentCertificate | None:
    statement = select(AgentCertificate).where(
        AgentCertificate.thumbprint == thumbprint, AgentCertificate.org_id == org_id
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def _agent(session: AsyncSession, org_id: str, name: str) -> Any:
    try:
        return await registry.get_agent_by_name(session, org_id, name)
    except AgentNotFound:
        raise CertificateRefused("AGENT_NOT_FOUND") from None


def _check_active(org_id: str, org_status: str, agent_status: str) -> None:
    if org_status == OrgStatus.SUSPENDED.value:
        raise CertificateRefused("ORG_SUSPENDED")
    if org_status != OrgStatus.ACTIVE.value:
        raise CertificateRefused("ORG_NOT_ACTIVE", f"organization {org_id!r} is {org_status}")
    if agent_status != AgentStatus.ACTIVE.value:
        raise CertificateRefused("AGENT_NOT_ACTIVE", f"the agent is {agent_status}")
