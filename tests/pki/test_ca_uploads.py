"""Uploading an org CA: a root, a chain, with or without its key, and every rule an upload
must meet (each refusal a 400 INVALID_CA naming its reason, leaving nothing behind)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from tabard.core.clock import FrozenClock
from tests.conftest import ADMIN, create_agent, create_org
from tests.pki.support import (
    TestCa,
    csr_pem,
    ec_key,
    issue_certificate,
    key_pem,
    pem,
)

CAS = "/v1/orgs/acme/cas"
_SHA256_WITH_RSA = bytes.fromhex("06092a864886f70d01010b")
_SHA1_WITH_RSA = bytes.fromhex("06092a864886f70d010105")


async def upload(
    client: httpx.AsyncClient, org_id: str = "acme", headers: dict[str, str] = ADMIN, **fields: Any
) -> httpx.Response:
    return await client.post(
        f"/v1/orgs/{org_id}/cas", json={"source": "upload", **fields}, headers=headers
    )


async def assert_refused(client: httpx.AsyncClient, reason: str, **fields: Any) -> None:
    """The upload is a 400 INVALID_CA naming `reason`, and no CA was created."""
    response = await upload(client, **fields)
    assert response.status_code == 400, response.text
    problem = response.json()
    assert (problem["code"], problem["reason"]) == ("INVALID_CA", reason), problem
    listed = await client.get(CAS, headers=ADMIN)
    assert listed.status_code == 200, listed.text
    assert listed.json() == []


def ca_with_extension(now: datetime, extension: x509.ExtensionType) -> x509.Certificate:
    """A self-signed CA certificate carrying one extra extension."""
    key = ec_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Constrained CA")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(extension, critical=True)
        .sign(key, hashes.SHA256())
    )


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def sha1_signed_ca(now: datetime) -> x509.Certificate:
    """A CA certificate signed with SHA-1. `cryptography` refuses to build one, so the TBS of a
    SHA-256 certificate gets the sha1WithRSAEncryption OID (same length) and is signed anew."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    template = TestCa(now, name="SHA-1 CA", key=key).certificate
    tbs = template.tbs_certificate_bytes
    assert tbs.count(_SHA256_WITH_RSA) == 1
    tbs = tbs.replace(_SHA256_WITH_RSA, _SHA1_WITH_RSA)
    signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 - the point
    algorithm = _der(0x30, _SHA1_WITH_RSA + b"\x05\x00")
    der = _der(0x30, tbs + algorithm + _der(0x03, b"\x00" + signature))
    certificate = x509.load_der_x509_certificate(der)
    assert isinstance(certificate.signature_hash_algorithm, hashes.SHA1)
    return certificate


class TestUploadCa:
    async def test_a_valid_root_is_registered_without_issuing_rights(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        root = TestCa(clock.now())
        response = await upload(client, certificate_pem=root.pem)
        assert response.status_code == 201, response.text
        ca = response.json()
        assert (ca["source"], ca["status"], ca["can_issue"]) == ("uploaded", "active", False)
        assert x509.load_pem_x509_certificate(ca["certificate_pem"].encode()) == root.certificate
        assert ca["subject"] == "CN=Org Root CA"

    async def test_a_root_with_intermediates_in_issuing_first_order(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        root = TestCa(clock.now(), name="Root")
        middle = TestCa(clock.now(), name="Middle", parent=root)
        issuing = TestCa(clock.now(), name="Issuing", parent=middle, key=ec_key(ec.SECP384R1()))
        response = await upload(
            client, certificate_pem=root.pem, intermediates_pem=issuing.pem + middle.pem
        )
        assert response.status_code == 201, response.text
        ca = response.json()
        chain = x509.load_pem_x509_certificates(ca["intermediates_pem"].encode())
        assert chain == [issuing.certificate, middle.certificate]
        assert ca["key_algorithm"] == "EC-P384"  # the issuing CA's key

    async def test_with_the_issuing_key_tabard_signs_csrs_under_the_intermediate(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        root = TestCa(clock.now(), name="Root")
        issuing = TestCa(clock.now(), name="Issuing", parent=root)
        response = await upload(
            client,
            certificate_pem=root.pem,
            intermediates_pem=issuing.pem,
            private_key_pem=key_pem(issuing.key),
        )
        assert response.status_code == 201, response.text
        assert response.json()["can_issue"] is True
        agent = await create_agent(client, "acme", "bot")
        body, leaf, _ = await issue_certificate(client, "acme", agent["id"])
        assert leaf.issuer == issuing.certificate.subject
        leaf.verify_directly_issued_by(issuing.certificate)
        assert body["chain_pem"] == issuing.pem + root.pem

    async def test_without_its_key_the_ca_cannot_sign_csrs(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        ca = (await upload(client, certificate_pem=TestCa(clock.now()).pem)).json()
        assert ca["can_issue"] is False
        agent = await create_agent(client, "acme", "bot")
        response = await client.post(
            f"/v1/orgs/acme/agents/{agent['id']}/certificates",
            json={"csr_pem": csr_pem(ec_key()), "ca_id": ca["id"]},
            headers=ADMIN,
        )
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "CA_KEY_UNAVAILABLE"

    async def test_uploading_the_same_ca_twice_is_a_conflict(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        root = TestCa(clock.now())
        assert (await upload(client, certificate_pem=root.pem)).status_code == 201
        again = await upload(client, certificate_pem=root.pem)
        assert again.status_code == 409, again.text
        assert again.json()["code"] == "CA_ALREADY_REGISTERED"
        assert len((await client.get(CAS, headers=ADMIN)).json()) == 1


class TestUploadRules:
    async def test_not_a_ca(self, client: httpx.AsyncClient, clock: FrozenClock) -> None:
        await create_org(client, "acme")
        await assert_refused(client, "not_a_ca", certificate_pem=TestCa(clock.now(), ca=False).pem)

    async def test_a_ca_without_key_cert_sign(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        usage = x509.KeyUsage(True, False, False, False, False, False, True, False, False)
        certificate = ca_with_extension(clock.now(), usage)
        await assert_refused(client, "no_key_cert_sign", certificate_pem=pem(certificate))

    async def test_rsa_1024_is_a_weak_key(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point
        await assert_refused(client, "weak_key", certificate_pem=TestCa(clock.now(), key=key).pem)

    async def test_ec_p521_and_p192_are_refused_curves(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        for curve in (ec.SECP521R1(), ec.SECP192R1()):
            root = TestCa(clock.now(), key=ec_key(curve))
            await assert_refused(client, "weak_key", certificate_pem=root.pem)

    async def test_a_sha1_signature_is_weak(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        certificate = sha1_signed_ca(clock.now())
        await assert_refused(client, "weak_signature", certificate_pem=pem(certificate))

    async def test_expired(self, client: httpx.AsyncClient, clock: FrozenClock) -> None:
        await create_org(client, "acme")
        start = clock.now() - timedelta(days=400)
        root = TestCa(clock.now(), not_before=start, lifetime=timedelta(days=365))
        await assert_refused(client, "expired", certificate_pem=root.pem)

    async def test_not_yet_valid(self, client: httpx.AsyncClient, clock: FrozenClock) -> None:
        await create_org(client, "acme")
        root = TestCa(clock.now(), not_before=clock.now() + timedelta(days=1))
        await assert_refused(client, "not_yet_valid", certificate_pem=root.pem)

    async def test_an_expired_intermediate(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        root = TestCa(clock.now())
        start = clock.now() - timedelta(days=10)
        old = TestCa(clock.now(), parent=root, not_before=start, lifetime=timedelta(days=5))
        await assert_refused(client, "expired", certificate_pem=root.pem, intermediates_pem=old.pem)

    async def test_garbage_is_not_pem(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await assert_refused(client, "pem_invalid", certificate_pem="not a certificate")

    async def test_two_certificates_as_the_anchor(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        both = TestCa(clock.now()).pem + TestCa(clock.now()).pem
        await assert_refused(client, "pem_invalid", certificate_pem=both)

    async def test_garbage_intermediates(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        root = TestCa(clock.now()).pem
        await assert_refused(client, "pem_invalid", certificate_pem=root, intermediates_pem="junk")

    async def test_an_intermediate_of_another_root_breaks_the_chain(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        stranger = TestCa(clock.now(), name="Issuing", parent=TestCa(clock.now(), name="Other"))
        root = TestCa(clock.now())
        await assert_refused(
            client, "chain_broken", certificate_pem=root.pem, intermediates_pem=stranger.pem
        )

    async def test_intermediates_in_anchor_first_order_break_the_chain(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        root = TestCa(clock.now(), name="Root")
        middle = TestCa(clock.now(), name="Middle", parent=root)
        issuing = TestCa(clock.now(), name="Issuing", parent=middle)
        await assert_refused(
            client,
            "chain_broken",
            certificate_pem=root.pem,
            intermediates_pem=middle.pem + issuing.pem,
        )

    async def test_the_private_key_of_another_key_pair(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        root = TestCa(clock.now())
        await assert_refused(
            client, "key_mismatch", certificate_pem=root.pem, private_key_pem=key_pem(ec_key())
        )

    async def test_the_anchor_key_when_an_intermediate_issues(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        root = TestCa(clock.now())
        issuing = TestCa(clock.now(), name="Issuing", parent=root)
        await assert_refused(
            client,
            "key_mismatch",
            certificate_pem=root.pem,
            intermediates_pem=issuing.pem,
            private_key_pem=key_pem(root.key),
        )

    async def test_a_private_key_that_is_not_pem(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        root = TestCa(clock.now()).pem
        await assert_refused(
            client, "private_key_invalid", certificate_pem=root, private_key_pem="secret"
        )

    async def test_uri_name_constraints_are_unsupported(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        constraints = x509.NameConstraints(
            permitted_subtrees=[x509.UniformResourceIdentifier("127.0.0.1")],
            excluded_subtrees=None,
        )
        certificate = ca_with_extension(clock.now(), constraints)
        await assert_refused(
            client, "unsupported_name_constraints", certificate_pem=pem(certificate)
        )
