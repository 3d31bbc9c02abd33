"""Helpers of the PKI tests: keys, CSRs and certificates made with `cryptography` (independently
of Tabard's own builders), and the proxy header a TLS terminator forwards."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import ADMIN

CERT_HEADER = "X-Client-Cert"
# Settings of a deployment behind a TLS-terminating proxy on loopback (nginx's
# $ssl_client_escaped_cert in CERT_HEADER); the trust domain the tests expect.
MTLS = {"mtls_client_cert_header": CERT_HEADER, "trusted_proxies": ["127.0.0.1/32", "::1"]}
TRUST_DOMAIN = "127.0.0.1"  # the host of the default public URL

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def spiffe_id(org_id: str, agent_name: str, trust_domain: str = TRUST_DOMAIN) -> str:
    return f"spiffe://{trust_domain}/org/{org_id}/agent/{agent_name}"


def ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def csr_pem(key: PrivateKey, uri: str | None = None) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent")])
    )
    if uri is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def _usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class TestCa:
    """A CA the org runs itself (for uploads and certificates it issues outside Tabard)."""

    __test__: ClassVar[bool] = False  # a helper, not a test class, despite its name
    now: datetime
    name: str = "Org Root CA"
    key: PrivateKey = field(default_factory=ec_key)
    parent: TestCa | None = None
    lifetime: timedelta = timedelta(days=365)
    ca: bool = True
    hash_algorithm: hashes.HashAlgorithm = field(default_factory=hashes.SHA256)
    not_before: datetime | None = None
    certificate: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        issuer = self.parent.certificate.subject if self.parent else subject
        signer = self.parent.key if self.parent else self.key
        start = self.not_before or self.now - timedelta(minutes=5)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + self.lifetime)
            .add_extension(x509.BasicConstraints(ca=self.ca, path_length=None), critical=True)
            .add_extension(_usage(self.ca), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
        )
        if self.parent is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.parent.key.public_key()),
                critical=False,
            )
        self.certificate = builder.sign(signer, self.hash_algorithm)  # type: ignore[arg-type]

    @property
    def pem(self) -> str:
        return pem(self.certificate)

    def issue(
        self,
        uri: str | None,
        *,
        key: PrivateKey | None = None,
        client_auth: bool = True,
        lifetime: timedelta = timedelta(days=1),
        not_before: datetime | None = None,
        extra_uris: tuple[str, ...] = (),
    ) -> tuple[x509.Certificate, PrivateKey]:
        """An end-entity certificate for `uri` (a SPIFFE ID), signed by this CA."""
        key = key or ec_key()
        start = not_before or self.now - timedelta(minutes=1)
        uris = [uri, *extra_uris] if uri else list(extra_uris)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent")]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(False), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if uris:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
                critical=False,
            )
        if client_auth:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        return builder.sign(self.key, hashes.SHA256()), key


def self_signed(
    now: datetime, uri: str, key: PrivateKey | None = None
) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed agent certificate (RFC 8705 §2.2) for `uri`."""
    key = key or ec_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self-signed agent")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(False), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def proxy_header(*certificates: x509.Certificate) -> dict[str, str]:
    """What a TLS-terminating proxy forwards: the client's chain, URL-encoded PEM."""
    return {CERT_HEADER: quote("".join(pem(c) for c in certificates))}


def x5c(*certificates: x509.Certificate) -> list[str]:
    """RFC 7515 §4.1.6: standard base64 DER, signer first."""
    return [
        base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in certificates
    ]


async def generate_ca(
    client: httpx.AsyncClient, org_id: str, headers: dict[str, str] = ADMIN, **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/orgs/{org_id}/cas", json={"source": "generate", **fields}, headers=headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def issue_certificate(
    client: httpx.AsyncClient,
    org_id: str,
    agent_id: str,
    key: PrivateKey | None = None,
    headers: dict[str, str] = ADMIN,
    **fields: Any,
) -> tuple[dict[str, Any], x509.Certificate, PrivateKey]:
    """Have Tabard sign a CSR for the agent: (response JSON, certificate, private key)."""
    key = key or ec_key()
    response = await client.post(
        f"/v1/orgs/{org_id}/agents/{agent_id}/certificates",
        json={"csr_pem": csr_pem(key), **fields},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body, x509.load_pem_x509_certificate(body["certificate_pem"].encode()), key
