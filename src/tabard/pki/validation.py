"""Checking an agent certificate against its org's CAs: RFC 5280 path validation (through
`cryptography`'s verifier, Web PKI profile), then the rules of an X.509-SVID for TLS client
authentication. Every refusal is a `CertificateRefused` with its own code.

Pure over rows handed in; the caller loads the CAs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from tabard.pki import certs
from tabard.pki.authorities import anchor_of, intermediates_of
from tabard.pki.errors import CertificateRefused
from tabard.pki.models import CertificateAuthority
from tabard.pki.spiffe import AgentSpiffeId, parse_agent_spiffe_id


@dataclass(frozen=True, slots=True)
class ChainedTo:
    """The CA a certificate chains to, and the issuing chain up to its anchor."""

    ca: CertificateAuthority
    chain: list[x509.Certificate]


def spiffe_id_of(leaf: x509.Certificate) -> tuple[str, AgentSpiffeId]:
    """The one SPIFFE ID of an agent SVID (X509-SVID §2: exactly one URI SAN)."""
    names = certs.uri_names(leaf)
    parsed = parse_agent_spiffe_id(names[0]) if len(names) == 1 else None
    if parsed is None:
        raise CertificateRefused(
            "CERTIFICATE_SPIFFE_ID_INVALID",
            "the certificate must carry exactly one URI SAN, the agent's SPIFFE ID "
            "(spiffe://<trust domain>/org/<org>/agent/<name>)",
        )
    return names[0], parsed


def check_leaf(leaf: x509.Certificate, now: datetime) -> None:
    """Validity, key strength, CA=false and EKU clientAuth of an end-entity certificate."""
    validity = certs.validity_problem(leaf, now)
    if validity == "expired":
        raise CertificateRefused("CERTIFICATE_EXPIRED")
    if validity == "not_yet_valid":
        raise CertificateRefused("CERTIFICATE_NOT_YET_VALID")
    problem = certs.key_problem(leaf.public_key())
    if problem is not None:
        raise CertificateRefused("CERTIFICATE_KEY_TOO_WEAK", f"the certificate has an {problem}")
    if certs.is_ca(leaf):
        raise CertificateRefused("CERTIFICATE_IS_CA")
    if not certs.allows_client_auth(leaf):
        raise CertificateRefused(
            "CERTIFICATE_NOT_CLIENT_AUTH",
            "the certificate's extended key usage must include clientAuth",
        )
    problem = certs.signature_problem(leaf)
    if problem is not None:
        raise CertificateRefused("CERTIFICATE_KEY_TOO_WEAK", f"the certificate is {problem}")


def chain_to_org(
    leaf: x509.Certificate,
    presented_intermediates: Sequence[x509.Certificate],
    active: Sequence[CertificateAuthority],
    replaced: Sequence[CertificateAuthority],
    now: datetime,
) -> ChainedTo:
    """The active CA `leaf` chains to at `now`; refused as untrusted, expired, not yet valid,
    or issued by a replaced CA."""
    chained = _verify(leaf, presented_intermediates, active, now)
    if chained is not None:
        return chained
    validity = certs.validity_problem(leaf, now)
    if validity is not None:
        raise CertificateRefused(
            "CERTIFICATE_EXPIRED" if validity == "expired" else "CERTIFICATE_NOT_YET_VALID"
        )
    # Checked at a time the leaf was valid: replaced CAs refuse whatever they ever issued.
    if replaced and _verify(leaf, presented_intermediates, replaced, leaf.not_valid_before_utc):
        raise CertificateRefused("CERTIFICATE_CA_REPLACED")
    raise CertificateRefused("CERTIFICATE_UNTRUSTED")


def is_self_signed(certificate: x509.Certificate) -> bool:
    if certificate.issuer != certificate.subject:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _verify(
    leaf: x509.Certificate,
    presented: Sequence[x509.Certificate],
    cas: Sequence[CertificateAuthority],
    at: datetime,
) -> ChainedTo | None:
    if not cas:
        return None
    anchors = {certs.thumbprint(anchor_of(ca)): ca for ca in cas}
    intermediates = [*presented, *(i for ca in cas for i in intermediates_of(ca))]
    verifier = (
        PolicyBuilder().store(Store([anchor_of(ca) for ca in cas])).time(at).build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, intermediates)
    except VerificationError:
        return None
    ca = anchors.get(certs.thumbprint(verified.chain[-1]))
    return ChainedTo(ca, list(verified.chain[1:])) if ca is not None else None
