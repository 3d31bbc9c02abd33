"""Trust bundles: the trust domain's SPIFFE bundle (JSON) and each org's PEM bundle, read back
with `cryptography` and with the `spiffe` library a relying party would use."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from spiffe import SpiffeId, TrustDomain, X509Bundle, X509Svid

from tabard.core.clock import FrozenClock
from tests.conftest import ADMIN, create_agent, create_org
from tests.pki.support import TRUST_DOMAIN, TestCa, generate_ca, issue_certificate, key_pem
from tests.pki.support import spiffe_id as agent_spiffe_id


def b64url_uint(value: int, size: int | None = None) -> str:
    raw = value.to_bytes(size or (value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def anchor(ca: dict[str, Any]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ca["certificate_pem"].encode())


async def bundle(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/pki/bundle")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "public, max-age=300"
    body: dict[str, Any] = response.json()
    return body


def authorities(document: dict[str, Any]) -> list[x509.Certificate]:
    """The CA certificates of a JSON bundle, each key's single x5c entry decoded."""
    certificates = []
    for key in document["keys"]:
        assert len(key["x5c"]) == 1, key
        certificates.append(x509.load_der_x509_certificate(base64.b64decode(key["x5c"][0])))
    return certificates


async def org_pem(client: httpx.AsyncClient, org_id: str) -> httpx.Response:
    return await client.get(f"/pki/orgs/{org_id}/bundle.pem")


class TestTrustDomainBundle:
    async def test_each_active_ca_is_an_x509_svid_key_with_its_certificate(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        ca = await generate_ca(client, "acme")
        document = await bundle(client)
        [key] = document["keys"]
        assert key["use"] == "x509-svid"
        assert authorities(document) == [anchor(ca)]
        public = anchor(ca).public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        numbers = public.public_numbers()
        assert (key["kty"], key["crv"]) == ("EC", "P-256")
        assert (key["x"], key["y"]) == (b64url_uint(numbers.x, 32), b64url_uint(numbers.y, 32))
        assert isinstance(document["spiffe_sequence"], int)
        assert document["spiffe_refresh_hint"] == 300

    async def test_a_p384_key_names_its_curve(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        ca = await generate_ca(client, "acme", key_algorithm="EC-P384")
        [key] = (await bundle(client))["keys"]
        public = anchor(ca).public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert (key["crv"], key["x"]) == ("P-384", b64url_uint(public.public_numbers().x, 48))

    async def test_an_rsa_key_carries_its_modulus_and_exponent(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        org_ca = TestCa(clock.now(), key=rsa.generate_private_key(65537, 2048))
        body = {"source": "upload", "certificate_pem": org_ca.pem}
        assert (await client.post("/v1/orgs/acme/cas", json=body, headers=ADMIN)).status_code == 201
        [key] = (await bundle(client))["keys"]
        public = org_ca.key.public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        numbers = public.public_numbers()
        assert (key["kty"], key["n"], key["e"]) == ("RSA", b64url_uint(numbers.n), "AQAB")
        assert "crv" not in key

    async def test_the_sequence_grows_when_a_ca_is_added(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        await generate_ca(client, "acme")
        before = (await bundle(client))["spiffe_sequence"]
        clock.advance(5)
        await generate_ca(client, "acme")
        after = await bundle(client)
        assert len(after["keys"]) == 2
        assert after["spiffe_sequence"] > before

    async def test_a_suspended_orgs_cas_leave_the_bundle(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        acme = await generate_ca(client, "acme")
        await generate_ca(client, "globex")
        before = await bundle(client)
        assert len(before["keys"]) == 2
        clock.advance(5)
        suspended = await client.post("/v1/orgs/globex/suspend", headers=ADMIN)
        assert suspended.status_code == 200, suspended.text
        after = await bundle(client)
        assert authorities(after) == [anchor(acme)]
        assert after["spiffe_sequence"] > before["spiffe_sequence"]

    async def test_a_replaced_ca_leaves_the_bundle(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        old = await generate_ca(client, "acme")
        before = (await bundle(client))["spiffe_sequence"]
        clock.advance(5)
        response = await client.post(
            f"/v1/orgs/acme/cas/{old['id']}/replace", json={"source": "generate"}, headers=ADMIN
        )
        assert response.status_code == 201, response.text
        after = await bundle(client)
        assert authorities(after) == [anchor(response.json())]
        assert after["spiffe_sequence"] > before

    async def test_the_sequence_never_goes_back_when_an_org_is_deleted(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        await generate_ca(client, "acme")
        clock.advance(10)
        await create_org(client, "globex")
        await generate_ca(client, "globex")
        before = (await bundle(client))["spiffe_sequence"]
        clock.advance(10)
        assert (await client.delete("/v1/orgs/globex", headers=ADMIN)).status_code == 204
        after = await bundle(client)
        assert len(after["keys"]) == 1
        assert after["spiffe_sequence"] > before

    async def test_two_changes_in_the_same_second_each_move_the_sequence(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        await generate_ca(client, "acme")
        first = (await bundle(client))["spiffe_sequence"]
        await generate_ca(client, "acme")  # the frozen clock has not moved
        assert (await bundle(client))["spiffe_sequence"] > first

    async def test_an_empty_trust_domain_has_no_keys(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        assert (await bundle(client))["keys"] == []


class TestOrgPemBundle:
    async def test_the_org_bundle_holds_its_active_anchors(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        generated = await generate_ca(client, "acme")
        root = TestCa(clock.now(), name="Root")
        issuing = TestCa(clock.now(), name="Issuing", parent=root)
        body = {"source": "upload", "certificate_pem": root.pem, "intermediates_pem": issuing.pem}
        assert (await client.post("/v1/orgs/acme/cas", json=body, headers=ADMIN)).status_code == 201
        await generate_ca(client, "globex")
        response = await org_pem(client, "acme")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/pem-certificate-chain"
        certificates = x509.load_pem_x509_certificates(response.content)
        assert sorted(c.fingerprint(hashes.SHA256()) for c in certificates) == sorted(
            c.fingerprint(hashes.SHA256()) for c in (anchor(generated), root.certificate)
        )

    async def test_a_suspended_org_publishes_nothing(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await generate_ca(client, "acme")
        await client.post("/v1/orgs/acme/suspend", headers=ADMIN)
        response = await org_pem(client, "acme")
        assert response.status_code == 200, response.text
        assert response.text == ""

    async def test_an_unknown_org(self, client: httpx.AsyncClient) -> None:
        response = await org_pem(client, "nobody")
        assert response.status_code == 404, response.text


class TestSpiffeInterop:
    async def test_an_issued_svid_parses_with_the_spiffe_library(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        await generate_ca(client, "acme")
        agent = await create_agent(client, "acme", "bot")
        body, leaf, key = await issue_certificate(client, "acme", agent["id"])
        chain = (body["certificate_pem"] + body["chain_pem"]).encode()
        svid = X509Svid.parse(chain, key_pem(key).encode())
        assert svid.spiffe_id == SpiffeId(agent_spiffe_id("acme", "bot"))
        assert svid.spiffe_id.trust_domain == TrustDomain(TRUST_DOMAIN)
        assert svid.leaf == leaf
        assert len(svid.cert_chain) == 2

    async def test_the_org_pem_bundle_parses_as_an_x509_bundle(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        first = await generate_ca(client, "acme")
        second = await generate_ca(client, "acme", key_algorithm="EC-P384")
        response = await org_pem(client, "acme")
        parsed = X509Bundle.parse(TrustDomain(TRUST_DOMAIN), response.content)
        assert parsed.x509_authorities == {anchor(first), anchor(second)}

    async def test_each_x5c_of_the_json_bundle_parses_raw(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        cas = [await generate_ca(client, "acme"), await generate_ca(client, "globex")]
        document = await bundle(client)
        parsed = set()
        for key in document["keys"]:
            der = base64.b64decode(key["x5c"][0])
            parsed |= X509Bundle.parse_raw(TrustDomain(TRUST_DOMAIN), der).x509_authorities
        assert parsed == {anchor(ca) for ca in cas}

    async def test_an_issued_svid_path_validates_against_the_bundle(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        await generate_ca(client, "acme")
        agent = await create_agent(client, "acme", "bot")
        _, leaf, _ = await issue_certificate(client, "acme", agent["id"])
        store = Store(authorities(await bundle(client)))
        verifier = PolicyBuilder().store(store).time(clock.now()).build_client_verifier()
        verified = verifier.verify(leaf, [])
        assert verified.subjects == [x509.UniformResourceIdentifier(agent_spiffe_id("acme", "bot"))]
        assert verified.chain[0] == leaf

    async def test_an_svid_of_a_replaced_ca_no_longer_validates(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        old = await generate_ca(client, "acme")
        agent = await create_agent(client, "acme", "bot")
        _, leaf, _ = await issue_certificate(client, "acme", agent["id"])
        await client.post(
            f"/v1/orgs/acme/cas/{old['id']}/replace", json={"source": "generate"}, headers=ADMIN
        )
        store = Store(authorities(await bundle(client)))
        verifier = PolicyBuilder().store(store).time(clock.now()).build_client_verifier()
        with pytest.raises(VerificationError):
            verifier.verify(leaf, [])
        published = x509.load_pem_x509_certificates((await org_pem(client, "acme")).content)
        assert anchor(old) not in published
