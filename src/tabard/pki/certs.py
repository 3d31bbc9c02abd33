"""X.509 building blocks (RFC 5280): parsing, the key and signature rules, and the certificates,
CRLs and CA certificates Tabard makes. Pure functions over `cryptography` objects.

The rules every CA and agent certificate meets: an RSA key of at least 2048 bits or an EC key
on P-256 or P-384, and a signature made with SHA-256 or better.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tabard.core.jose import b64url_encode

MIN_RSA_BITS = 2048
_CURVES = {"secp256r1": "EC-P256", "secp384r1": "EC-P384"}
_STRONG_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
# A certificate's validity starts a little in the past: clocks of relying parties drift.
BACKDATE = timedelta(minutes=1)

CaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def load_certificates(text: str) -> list[x509.Certificate]:
    """Every certificate of a PEM text, in order; ValueError when there is none or one is bad."""
    try:
        certificates = x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        raise ValueError(
            "not a PEM certificate (or one of the certificates is malformed)"
        ) from None
    return certificates


def load_private_key(text: str) -> CaKey:
    """An unencrypted PEM private key (PKCS#8 or traditional); ValueError otherwise."""
    try:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("the private key must be an EC or RSA key")
    return key


def key_problem(key: object) -> str | None:
    """Why a public key is too weak or of an unsupported kind, or None when it is acceptable."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return f"RSA key of {key.key_size} bits (at least {MIN_RSA_BITS} required)"
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVES:
            return f"EC key on curve {key.curve.name} (P-256 or P-384 required)"
        return None
    return f"{type(key).__name__.removesuffix('PublicKey') or 'unknown'} key (RSA or EC required)"


def key_algorithm(key: object) -> str:
    """`EC-P256`, `EC-P384` or `RSA-<bits>`, for listings."""
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _CURVES.get(key.curve.name, f"EC-{key.curve.name}")
    return "unsupported"


def signature_problem(certificate: x509.Certificate) -> str | None:
    """Why the certificate's signature algorithm is too weak, or None."""
    try:
        algorithm = certificate.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if not isinstance(algorithm, _STRONG_HASHES):
        name = algorithm.name if algorithm is not None else "an unsupported algorithm"
        return f"signed with {name} (SHA-256 or better required)"
    return None


def validity_problem(certificate: x509.Certificate, now: datetime) -> str | None:
    """`expired` or `not_yet_valid` at `now`, or None while the certificate is valid."""
    if now >= certificate.not_valid_after_utc:
        return "expired"
    if now < certificate.not_valid_before_utc:
        return "not_yet_valid"
    return None


def is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def may_sign_certificates(certificate: x509.Certificate) -> bool:
    """False when a key-usage extension is present without keyCertSign."""
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.key_cert_sign


def allows_client_auth(certificate: x509.Certificate) -> bool:
    """The extended key usage names TLS client authentication (RFC 5280 §4.2.1.12)."""
    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CLIENT_AUTH in usage


def uri_names(certificate: x509.Certificate) -> list[str]:
    """The URI subject alternative names (where an SVID keeps its SPIFFE ID)."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return names.value.get_values_for_type(x509.UniformResourceIdentifier)


def has_uri_name_constraints(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return False
    subtrees = [*(constraints.permitted_subtrees or ()), *(constraints.excluded_subtrees or ())]
    return any(isinstance(name, x509.UniformResourceIdentifier) for name in subtrees)


def thumbprint(certificate: x509.Certificate) -> str:
    """`x5t#S256` (RFC 8705 §3.1): base64url SHA-256 of the DER encoding."""
    return b64url_encode(
        hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()
    )


def serial_hex(certificate: x509.Certificate) -> str:
    return format(certificate.serial_number, "x")


def parse_serial(text: str) -> int:
    """A serial number given as hex (colons and a 0x prefix allowed); ValueError otherwise."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    if not cleaned or len(cleaned) > 40:
        raise ValueError("a serial number is 1 to 40 hex digits")
    return int(cleaned, 16)


def to_pem(certificates: Sequence[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def private_key_pem(key: CaKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate_key(algorithm: str) -> CaKey:
    if algorithm == "EC-P384":
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm == "RSA-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ec.generate_private_key(ec.SECP256R1())


def _hash_for(key: CaKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1":
        return hashes.SHA384()
    return hashes.SHA256()


def _usage(*, sign_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not sign_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=sign_certificates,
        crl_sign=sign_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The issuer's own key identifier when it has one, so chain builders match them."""
    try:
        own = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(own)


def build_ca(
    key: CaKey, common_name: str, organization: str, now: datetime, lifetime: timedelta
) -> x509.Certificate:
    """A self-signed CA certificate that may sign end-entity certificates only (path length 0).

    No name constraints: RFC 5280 constrains only a URI's host (the trust domain every org
    shares), and `cryptography`'s path validation refuses URI constraints altogether. Tabard
    confines each CA to its org by checking every SPIFFE ID itself.
    """
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    subject_key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(sign_certificates=True), critical=True)
        .add_extension(subject_key_id, critical=False)
        .sign(key, _hash_for(key))
    )


def build_svid(
    issuer: x509.Certificate,
    issuer_key: CaKey,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    *,
    spiffe_id: str,
    common_name: str,
    not_before: datetime,
    not_after: datetime,
    crl_url: str,
) -> x509.Certificate:
    """An X.509-SVID (SPIFFE X509-SVID §4, §5): exactly one URI SAN, CA=false, digitalSignature,
    EKU clientAuth, signed by the issuing CA certificate."""
    distribution = x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(crl_url)],
        relative_name=None,
        reasons=None,
        crl_issuer=None,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(sign_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(issuer), critical=False)
        .add_extension(x509.CRLDistributionPoints([distribution]), critical=False)
        .sign(issuer_key, _hash_for(issuer_key))
    )


def build_crl(
    issuer: x509.Certificate,
    issuer_key: CaKey,
    revoked: Sequence[tuple[int, datetime, x509.ReasonFlags]],
    *,
    now: datetime,
    next_update: datetime,
    number: int,
) -> bytes:
    """A DER CRL (RFC 5280 §5) signed by the issuing CA, with a CRL number and reason codes."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(_authority_key_id(issuer), critical=False)
    )
    for serial, revoked_at, reason in revoked:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(revoked_at)
            .add_extension(x509.CRLReason(reason), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(issuer_key, _hash_for(issuer_key))
    return crl.public_bytes(serialization.Encoding.DER)
