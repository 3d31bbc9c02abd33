"""Agent certificates: SVIDs Tabard signs from a CSR (parsed with `cryptography`), their
lifetime, the CSR rules, and certificates the org registers (CA-issued or self-signed)."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from tabard.core.clock import FrozenClock
from tests.conftest import ADMIN, create_agent, create_org
from tests.pki.support import (
    TestCa,
    csr_pem,
    ec_key,
    generate_ca,
    issue_certificate,
    key_pem,
    pem,
    self_signed,
    spiffe_id,
)

DAY = 86400


async def submit(
    client: httpx.AsyncClient, agent_id: str, headers: dict[str, str] = ADMIN, **body: Any
) -> httpx.Response:
    return await client.post(
        f"/v1/orgs/acme/agents/{agent_id}/certificates", json=body, headers=headers
    )


def assert_invalid(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 400, response.text
    problem = response.json()
    assert (problem["code"], problem["reason"]) == ("INVALID_CERTIFICATE", reason), problem


async def set_lifetime(client: httpx.AsyncClient, seconds: int) -> httpx.Response:
    return await client.patch(
        "/v1/orgs/acme/pki-settings", json={"certificate_lifetime_seconds": seconds}, headers=ADMIN
    )


async def acme_with_agent(client: httpx.AsyncClient, name: str = "bot") -> dict[str, Any]:
    await create_org(client, "acme")
    return await create_agent(client, "acme", name)


async def upload_ca(client: httpx.AsyncClient, ca: TestCa) -> dict[str, Any]:
    response = await client.post(
        "/v1/orgs/acme/cas", json={"source": "upload", "certificate_pem": ca.pem}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def lifetime_of(certificate: x509.Certificate, clock: FrozenClock) -> timedelta:
    """From now (the issuance instant) to the certificate's expiry, to the second."""
    return certificate.not_valid_after_utc - clock.now().replace(microsecond=0)


def tampered(csr: str) -> str:
    """The CSR with the last byte of its signature flipped."""
    der = bytearray(x509.load_pem_x509_csr(csr.encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


class TestIssueFromCsr:
    async def test_the_leaf_is_an_x509_svid_for_the_agent(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_with_agent(client)
        ca = await generate_ca(client, "acme")
        body, leaf, key = await issue_certificate(client, "acme", agent["id"])
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert list(san) == [x509.UniformResourceIdentifier(spiffe_id("acme", "bot"))]
        constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert constraints.ca is False
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.digital_signature
        assert not usage.key_cert_sign
        points = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        urls = [name.value for point in points for name in point.full_name or ()]
        assert urls == [f"http://127.0.0.1:8080/pki/cas/{ca['id']}/crl"]
        ca_certificate = x509.load_pem_x509_certificate(ca["certificate_pem"].encode())
        leaf.verify_directly_issued_by(ca_certificate)
        assert leaf.public_key() == key.public_key()
        assert lifetime_of(leaf, clock) == timedelta(days=1)
        assert (body["source"], body["status"], body["ca_id"]) == ("issued", "active", ca["id"])
        assert body["serial"] == format(leaf.serial_number, "x")
        assert body["spiffe_id"] == spiffe_id("acme", "bot")
        assert body["chain_pem"] == ca["certificate_pem"]
        assert body["pinned"] is False

    async def test_an_rsa_csr_is_signed_too(self, client: httpx.AsyncClient) -> None:
        agent = await acme_with_agent(client)
        await generate_ca(client, "acme")
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        body, leaf, _ = await issue_certificate(client, "acme", agent["id"], key=key)
        assert body["key_algorithm"] == "RSA-2048"
        assert leaf.public_key() == key.public_key()

    async def test_a_csr_naming_the_agents_own_spiffe_id_is_accepted(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await acme_with_agent(client)
        await generate_ca(client, "acme")
        response = await submit(
            client, agent["id"], csr_pem=csr_pem(ec_key(), spiffe_id("acme", "bot"))
        )
        assert response.status_code == 201, response.text

    async def test_the_org_lists_the_agents_certificates(self, client: httpx.AsyncClient) -> None:
        agent = await acme_with_agent(client)
        await generate_ca(client, "acme")
        first, _, _ = await issue_certificate(client, "acme", agent["id"])
        second, _, _ = await issue_certificate(client, "acme", agent["id"])
        listed = await client.get(f"/v1/orgs/acme/agents/{agent['id']}/certificates", headers=ADMIN)
        assert listed.status_code == 200, listed.text
        assert sorted(c["id"] for c in listed.json()) == sorted([first["id"], second["id"]])

    async def test_without_an_active_ca_there_is_no_signer(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_with_agent(client)
        response = await submit(client, agent["id"], csr_pem=csr_pem(ec_key()))
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "NO_ACTIVE_CA"
        await upload_ca(client, TestCa(clock.now()))  # verifies, but cannot sign
        response = await submit(client, agent["id"], csr_pem=csr_pem(ec_key()))
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "NO_ACTIVE_CA"

    async def test_a_decommissioned_agent_gets_no_certificate(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await acme_with_agent(client)
        await generate_ca(client, "acme")
        url = f"/v1/orgs/acme/agents/{agent['id']}/decommission"
        assert (await client.post(url, headers=ADMIN)).status_code == 200
        response = await submit(client, agent["id"], csr_pem=csr_pem(ec_key()))
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "AGENT_STATE_CONFLICT"


class TestCertificateLifetime:
    async def test_the_org_setting_changes_the_lifetime(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_with_agent(client)
        await generate_ca(client, "acme")
        current = await client.get("/v1/orgs/acme/pki-settings", headers=ADMIN)
        assert current.json() == {"certificate_lifetime_seconds": DAY}
        response = await set_lifetime(client, 3600)
        assert response.status_code == 200, response.text
        assert response.json() == {"certificate_lifetime_seconds": 3600}
        _, leaf, _ = await issue_certificate(client, "acme", agent["id"])
        assert lifetime_of(leaf, clock) == timedelta(hours=1)

    async def test_the_setting_is_bounded_to_five_minutes_and_ninety_days(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        assert (await set_lifetime(client, 299)).status_code == 422
        assert (await set_lifetime(client, 90 * DAY + 1)).status_code == 422
        assert (await set_lifetime(client, 300)).status_code == 200
        assert (await set_lifetime(client, 90 * DAY)).status_code == 200
        current = await client.get("/v1/orgs/acme/pki-settings", headers=ADMIN)
        assert current.json() == {"certificate_lifetime_seconds": 90 * DAY}

    async def test_a_request_may_ask_for_a_shorter_lifetime(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_with_agent(client)
        await generate_ca(client, "acme")
        _, leaf, _ = await issue_certificate(client, "acme", agent["id"], lifetime_seconds=600)
        assert lifetime_of(leaf, clock) == timedelta(minutes=10)

    async def test_a_request_never_exceeds_the_org_lifetime(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_with_agent(client)
        await generate_ca(client, "acme")
        await set_lifetime(client, 3600)
        _, leaf, _ = await issue_certificate(client, "acme", agent["id"], lifetime_seconds=7200)
        assert lifetime_of(leaf, clock) == timedelta(hours=1)

    async def test_a_certificate_never_outlives_its_ca(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_with_agent(client)
        ca = await generate_ca(client, "acme", validity_days=1)
        await set_lifetime(client, 3 * DAY)
        body, leaf, _ = await issue_certificate(client, "acme", agent["id"])
        ca_certificate = x509.load_pem_x509_certificate(ca["certificate_pem"].encode())
        assert leaf.not_valid_after_utc == ca_certificate.not_valid_after_utc
        assert lifetime_of(leaf, clock) <= timedelta(days=1)
        assert body["not_after"] == ca["not_after"]

    async def test_a_certificate_never_outlives_the_anchor_above_its_issuer(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_with_agent(client)
        root = TestCa(clock.now(), name="Root", lifetime=timedelta(days=2))
        issuing = TestCa(clock.now(), name="Issuing", parent=root, lifetime=timedelta(days=30))
        upload = {
            "source": "upload",
            "certificate_pem": root.pem,
            "intermediates_pem": issuing.pem,
            "private_key_pem": key_pem(issuing.key),
        }
        response = await client.post("/v1/orgs/acme/cas", json=upload, headers=ADMIN)
        assert response.status_code == 201, response.text
        await set_lifetime(client, 5 * DAY)
        _, leaf, _ = await issue_certificate(client, "acme", agent["id"])
        assert leaf.not_valid_after_utc == root.certificate.not_valid_after_utc


class TestCsrRules:
    async def test_garbage_is_not_a_csr(self, client: httpx.AsyncClient) -> None:
        agent = await acme_with_agent(client)
        await generate_ca(client, "acme")
        assert_invalid(await submit(client, agent["id"], csr_pem="hello"), "csr_invalid")

    async def test_a_tampered_signature_proves_no_possession(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await acme_with_agent(client)
        await generate_ca(client, "acme")
        response = await submit(client, agent["id"], csr_pem=tampered(csr_pem(ec_key())))
        assert_invalid(response, "csr_signature_invalid")

    async def test_an_rsa_1024_key_is_weak(self, client: httpx.AsyncClient) -> None:
        agent = await acme_with_agent(client)
        await generate_ca(client, "acme")
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point
        assert_invalid(await submit(client, agent["id"], csr_pem=csr_pem(key)), "weak_key")

    async def test_a_p521_key_is_refused(self, client: httpx.AsyncClient) -> None:
        agent = await acme_with_agent(client)
        await generate_ca(client, "acme")
        csr = csr_pem(ec_key(ec.SECP521R1()))
        assert_invalid(await submit(client, agent["id"], csr_pem=csr), "weak_key")

    async def test_asking_for_another_spiffe_id(self, client: httpx.AsyncClient) -> None:
        agent = await acme_with_agent(client)
        await generate_ca(client, "acme")
        csr = csr_pem(ec_key(), spiffe_id("acme", "someone-else"))
        assert_invalid(await submit(client, agent["id"], csr_pem=csr), "spiffe_id_mismatch")

    async def test_exactly_one_of_csr_and_certificate(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_with_agent(client)
        await generate_ca(client, "acme")
        assert_invalid(await submit(client, agent["id"]), "body_invalid")
        certificate, _ = self_signed(clock.now(), spiffe_id("acme", "bot"))
        both = await submit(
            client, agent["id"], csr_pem=csr_pem(ec_key()), certificate_pem=pem(certificate)
        )
        assert_invalid(both, "body_invalid")


class TestRegisterCertificate:
    async def test_a_certificate_the_org_issued_under_its_uploaded_ca(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_with_agent(client)
        org_ca = TestCa(clock.now())
        ca = await upload_ca(client, org_ca)
        certificate, _ = org_ca.issue(spiffe_id("acme", "bot"))
        response = await submit(client, agent["id"], certificate_pem=pem(certificate))
        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["source"], body["status"], body["ca_id"]) == ("registered", "active", ca["id"])
        assert body["chain_pem"] == org_ca.pem
        assert body["serial"] == format(certificate.serial_number, "x")

    async def test_a_certificate_with_another_spiffe_id(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_with_agent(client)
        org_ca = TestCa(clock.now())
        await upload_ca(client, org_ca)
        certificate, _ = org_ca.issue(spiffe_id("acme", "other-bot"))
        response = await submit(client, agent["id"], certificate_pem=pem(certificate))
        assert_invalid(response, "certificate_spiffe_id_mismatch")

    async def test_a_certificate_chaining_to_no_ca_of_the_org(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_with_agent(client)
        await upload_ca(client, TestCa(clock.now()))
        stranger = TestCa(clock.now(), name="Stranger CA")
        certificate, _ = stranger.issue(spiffe_id("acme", "bot"))
        response = await submit(client, agent["id"], certificate_pem=pem(certificate))
        assert_invalid(response, "certificate_untrusted")

    async def test_a_certificate_without_client_auth(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_with_agent(client)
        org_ca = TestCa(clock.now())
        await upload_ca(client, org_ca)
        certificate, _ = org_ca.issue(spiffe_id("acme", "bot"), client_auth=False)
        response = await submit(client, agent["id"], certificate_pem=pem(certificate))
        assert_invalid(response, "certificate_not_client_auth")

    async def test_an_expired_certificate(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_with_agent(client)
        org_ca = TestCa(clock.now())
        await upload_ca(client, org_ca)
        yesterday = clock.now() - timedelta(days=2)
        certificate, _ = org_ca.issue(spiffe_id("acme", "bot"), not_before=yesterday)
        response = await submit(client, agent["id"], certificate_pem=pem(certificate))
        assert_invalid(response, "certificate_expired")

    async def test_a_self_signed_certificate(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_with_agent(client)
        certificate, _ = self_signed(clock.now(), spiffe_id("acme", "bot"))
        response = await submit(client, agent["id"], certificate_pem=pem(certificate))
        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["source"], body["ca_id"], body["chain_pem"]) == ("self_signed", None, "")

    async def test_registering_the_same_certificate_twice(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_with_agent(client)
        org_ca = TestCa(clock.now())
        await upload_ca(client, org_ca)
        certificate, _ = org_ca.issue(spiffe_id("acme", "bot"))
        first = await submit(client, agent["id"], certificate_pem=pem(certificate))
        assert first.status_code == 201, first.text
        again = await submit(client, agent["id"], certificate_pem=pem(certificate))
        assert_invalid(again, "already_registered")
        listed = await client.get(f"/v1/orgs/acme/agents/{agent['id']}/certificates", headers=ADMIN)
        assert [c["id"] for c in listed.json()] == [first.json()["id"]]

    async def test_a_certificate_revoked_before_its_first_use_is_not_registered(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_with_agent(client)
        org_ca = TestCa(clock.now())
        ca = await upload_ca(client, org_ca)
        certificate, _ = org_ca.issue(spiffe_id("acme", "bot"))
        revocation = {"ca_id": ca["id"], "serial": format(certificate.serial_number, "x")}
        revoked = await client.post(
            "/v1/orgs/acme/certificate-revocations", json=revocation, headers=ADMIN
        )
        assert revoked.status_code == 201, revoked.text
        response = await submit(client, agent["id"], certificate_pem=pem(certificate))
        assert_invalid(response, "certificate_revoked")
