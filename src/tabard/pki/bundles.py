"""Trust bundles: what relying parties load to verify agent SVIDs.

The trust domain's bundle is a SPIFFE bundle (SPIFFE Trust Domain and Bundle §4): a JWK Set whose
`x509-svid` keys each carry one CA certificate in `x5c`, with `spiffe_sequence` (bumped whenever
the set of CAs changes) and `spiffe_refresh_hint`. Each org also has a PEM bundle of its CAs.
Only active CAs of active organizations are in either.
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit import service as audit
from tabard.core.jose import b64url_encode
from tabard.pki import certs
from tabard.pki.authorities import anchor_of
from tabard.pki.models import CertificateAuthority
from tabard.pki.schemas import CaStatus
from tabard.tenancy import service as tenancy
from tabard.tenancy.schemas import OrgStatus

REFRESH_HINT_SECONDS = 300
# What moves CAs in or out of the bundle. The sequence is that of the newest such audit event:
# it grows with every change and never goes back (audit events are never removed).
_CHANGES = (
    "ca.created",
    "ca.replaced",
    "org.approved",
    "org.rejected",
    "org.suspended",
    "org.reactivated",
    "org.deleted",
)


async def trust_domain_bundle(session: AsyncSession) -> dict[str, Any]:
    """The SPIFFE bundle of every active org's active CAs."""
    cas = await _trusted_cas(session, None)
    return {
        "keys": [_x509_svid_key(ca) for ca in cas],
        "spiffe_sequence": await audit.latest_sequence(session, _CHANGES),
        "spiffe_refresh_hint": REFRESH_HINT_SECONDS,
    }


async def org_bundle_pem(session: AsyncSession, org_id: str) -> str:
    """The PEM anchors of the org's active CAs (404 for an unknown org; empty if not active)."""
    org = await tenancy.get_org(session, org_id)
    if org.status != OrgStatus.ACTIVE.value:
        return ""
    return certs.to_pem([anchor_of(ca) for ca in await _trusted_cas(session, org_id)])


async def _trusted_cas(session: AsyncSession, org_id: str | None) -> list[CertificateAuthority]:
    statement = select(CertificateAuthority).where(
        CertificateAuthority.status == CaStatus.ACTIVE.value
    )
    if org_id is not None:
        statement = statement.where(CertificateAuthority.org_id == org_id)
    rows = list((await session.execute(statement.order_by(CertificateAuthority.id))).scalars())
    active_orgs = await tenancy.org_ids_with_status(
        session, {row.org_id for row in rows}, OrgStatus.ACTIVE
    )
    return [row for row in rows if row.org_id in active_orgs]


def _x509_svid_key(ca: CertificateAuthority) -> dict[str, Any]:
    anchor = anchor_of(ca)
    return {
        **_public_jwk(anchor.public_key()),
        "use": "x509-svid",
        "x5c": [base64.b64encode(certs.der(anchor)).decode()],
    }


def _public_jwk(key: object) -> dict[str, str]:
    if isinstance(key, ec.EllipticCurvePublicKey):
        size = (key.curve.key_size + 7) // 8
        numbers = key.public_numbers()
        return {
            "kty": "EC",
            "crv": {"secp256r1": "P-256", "secp384r1": "P-384"}[key.curve.name],
            "x": b64url_encode(numbers.x.to_bytes(size, "big")),
            "y": b64url_encode(numbers.y.to_bytes(size, "big")),
        }
    if isinstance(key, rsa.RSAPublicKey):
        numbers_rsa = key.public_numbers()
        return {
            "kty": "RSA",
            "n": b64url_encode(
                numbers_rsa.n.to_bytes((numbers_rsa.n.bit_length() + 7) // 8, "big")
            ),
            "e": b64url_encode(
                numbers_rsa.e.to_bytes((numbers_rsa.e.bit_length() + 7) // 8, "big")
            ),
        }
    raise TypeError(f"unsupported CA key {type(key).__name__}")
