"""Org certificate authorities: generated (checked with `cryptography`), listed, audited and
replaced; no private key ever leaves Tabard. Uploads are in test_ca_uploads.py."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tests.conftest import ADMIN, bearer, create_agent, create_org, create_org_key
from tests.pki.support import (
    MTLS,
    TestCa,
    csr_pem,
    ec_key,
    generate_ca,
    issue_certificate,
    key_pem,
    proxy_header,
    spiffe_id,
)

CAS = "/v1/orgs/acme/cas"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Behind a TLS-terminating proxy, so agents can log in with their certificates."""
    return settings.model_copy(update=MTLS)


async def upload(
    client: httpx.AsyncClient, org_id: str = "acme", headers: dict[str, str] = ADMIN, **fields: Any
) -> httpx.Response:
    return await client.post(
        f"/v1/orgs/{org_id}/cas", json={"source": "upload", **fields}, headers=headers
    )


async def replace(client: httpx.AsyncClient, ca: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(
        f"{CAS}/{ca['id']}/replace", json={"source": "generate"}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    new: dict[str, Any] = response.json()
    return new


def fingerprint(certificate: x509.Certificate) -> str:
    digest = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER))
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


class TestGenerateCa:
    async def test_the_default_is_an_ec_p256_root_for_end_entities_valid_five_years(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        ca = await generate_ca(client, "acme")
        certificate = x509.load_pem_x509_certificate(ca["certificate_pem"].encode())
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.critical
        assert constraints.value.ca
        assert constraints.value.path_length == 0
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign
        assert usage.crl_sign
        public_key = certificate.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert isinstance(public_key.curve, ec.SECP256R1)
        assert certificate.issuer == certificate.subject
        certificate.verify_directly_issued_by(certificate)
        lifetime = certificate.not_valid_after_utc - clock.now()
        assert abs(lifetime - timedelta(days=1825)) < timedelta(seconds=2)
        assert ca["can_issue"] is True
        assert (ca["source"], ca["status"], ca["key_algorithm"]) == (
            "generated",
            "active",
            "EC-P256",
        )
        assert ca["fingerprint"] == fingerprint(certificate)
        assert ca["intermediates_pem"] == ""
        assert ca["replaced_by"] is None

    async def test_ec_p384_is_signed_with_sha384(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        ca = await generate_ca(client, "acme", key_algorithm="EC-P384")
        certificate = x509.load_pem_x509_certificate(ca["certificate_pem"].encode())
        public_key = certificate.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert isinstance(public_key.curve, ec.SECP384R1)
        assert isinstance(certificate.signature_hash_algorithm, hashes.SHA384)
        assert (ca["key_algorithm"], ca["can_issue"]) == ("EC-P384", True)

    async def test_rsa_3072(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        ca = await generate_ca(client, "acme", key_algorithm="RSA-3072", common_name="Acme RSA")
        certificate = x509.load_pem_x509_certificate(ca["certificate_pem"].encode())
        public_key = certificate.public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)
        assert public_key.key_size == 3072
        assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
            "Acme RSA"
        )
        assert (ca["key_algorithm"], ca["can_issue"]) == ("RSA-3072", True)

    async def test_an_unknown_algorithm_is_a_validation_error(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        response = await client.post(
            CAS, json={"source": "generate", "key_algorithm": "EC-P521"}, headers=ADMIN
        )
        assert response.status_code == 422, response.text


class TestListAndGetCas:
    async def test_the_org_lists_and_reads_its_cas(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        generated = await generate_ca(client, "acme")
        uploaded = (await upload(client, certificate_pem=TestCa(clock.now()).pem)).json()
        key = bearer(await create_org_key(client, "acme"))
        listed = await client.get(CAS, headers=key)
        assert listed.status_code == 200, listed.text
        assert sorted(ca["id"] for ca in listed.json()) == sorted([generated["id"], uploaded["id"]])
        one = await client.get(f"{CAS}/{uploaded['id']}", headers=key)
        assert one.status_code == 200, one.text
        assert one.json() == uploaded

    async def test_an_unknown_ca_is_not_found(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        response = await client.get(f"{CAS}/0190c0de-0000-7000-8000-000000000000", headers=ADMIN)
        assert response.status_code == 404
        assert response.json()["code"] == "CA_NOT_FOUND"

    async def test_another_orgs_key_gets_404_everywhere(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        ca = await generate_ca(client, "acme")
        intruder = bearer(await create_org_key(client, "globex"))
        generate = {"source": "generate"}
        attempts = [
            await client.get(CAS, headers=intruder),
            await client.get(f"{CAS}/{ca['id']}", headers=intruder),
            await client.post(CAS, json=generate, headers=intruder),
            await client.post(f"{CAS}/{ca['id']}/replace", json=generate, headers=intruder),
            await client.get(f"/v1/orgs/globex/cas/{ca['id']}", headers=intruder),
        ]
        assert [response.status_code for response in attempts] == [404] * 5
        assert attempts[-1].json()["code"] == "CA_NOT_FOUND"
        assert (await client.get(f"{CAS}/{ca['id']}", headers=ADMIN)).json()["status"] == "active"


class TestCaAudit:
    async def test_creating_a_ca_records_ca_created(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        ca = await generate_ca(client, "acme")
        response = await client.get("/v1/audit", params={"org": "acme"}, headers=ADMIN)
        assert response.status_code == 200, response.text
        events = [e for e in response.json()["items"] if e["action"] == "ca.created"]
        assert len(events) == 1, events
        assert events[0]["target"] == ca["id"]
        assert events[0]["details"]["source"] == "generated"
        assert events[0]["outcome"] == "success"


class TestReplaceCa:
    async def test_the_new_ca_is_active_and_the_old_one_points_to_it(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        old = await generate_ca(client, "acme")
        response = await client.post(
            f"{CAS}/{old['id']}/replace", json={"source": "generate"}, headers=ADMIN
        )
        assert response.status_code == 201, response.text
        new = response.json()
        assert new["status"] == "active"
        assert new["id"] != old["id"]
        replaced = (await client.get(f"{CAS}/{old['id']}", headers=ADMIN)).json()
        assert replaced["status"] == "replaced"
        assert replaced["replaced_by"] == new["id"]
        assert replaced["replaced_at"] is not None

    async def test_certificates_of_the_old_ca_are_superseded(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        old = await generate_ca(client, "acme")
        agent = await create_agent(client, "acme", "bot")
        issued, _, _ = await issue_certificate(client, "acme", agent["id"])
        await client.post(f"{CAS}/{old['id']}/replace", json={"source": "generate"}, headers=ADMIN)
        url = f"/v1/orgs/acme/agents/{agent['id']}/certificates/{issued['id']}"
        certificate = (await client.get(url, headers=ADMIN)).json()
        assert certificate["status"] == "revoked"
        assert certificate["revocation_reason"] == "superseded"
        assert certificate["revoked_at"] is not None
        fresh, _, _ = await issue_certificate(client, "acme", agent["id"])
        assert fresh["ca_id"] != old["id"]
        assert fresh["status"] == "active"

    async def test_replacing_twice_is_a_conflict(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        old = await generate_ca(client, "acme")
        url = f"{CAS}/{old['id']}/replace"
        assert (
            await client.post(url, json={"source": "generate"}, headers=ADMIN)
        ).status_code == 201
        again = await client.post(url, json={"source": "generate"}, headers=ADMIN)
        assert again.status_code == 409, again.text
        assert again.json()["code"] == "CA_REPLACED"
        assert len((await client.get(CAS, headers=ADMIN)).json()) == 2

    async def test_a_refused_replacement_leaves_the_old_ca_active(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        old = await generate_ca(client, "acme")
        body = {"source": "upload", "certificate_pem": TestCa(clock.now(), ca=False).pem}
        response = await client.post(f"{CAS}/{old['id']}/replace", json=body, headers=ADMIN)
        assert response.status_code == 400
        assert response.json()["reason"] == "not_a_ca"
        listed = (await client.get(CAS, headers=ADMIN)).json()
        assert [(ca["id"], ca["status"]) for ca in listed] == [(old["id"], "active")]

    async def test_a_replaced_ca_signs_no_more(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        old = await generate_ca(client, "acme")
        agent = await create_agent(client, "acme", "bot")
        await replace(client, old)
        response = await client.post(
            f"/v1/orgs/acme/agents/{agent['id']}/certificates",
            json={"csr_pem": csr_pem(ec_key()), "ca_id": old["id"]},
            headers=ADMIN,
        )
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "CA_REPLACED"

    async def test_the_old_cas_crl_lists_its_superseded_certificates(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        old = await generate_ca(client, "acme")
        agent = await create_agent(client, "acme", "bot")
        issued, _, _ = await issue_certificate(client, "acme", agent["id"])
        await replace(client, old)
        crl = x509.load_der_x509_crl((await client.get(f"/pki/cas/{old['id']}/crl")).content)
        entry = crl.get_revoked_certificate_by_serial_number(int(issued["serial"], 16))
        assert entry is not None
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        assert reason is x509.ReasonFlags.superseded
        listed = await client.get(
            "/v1/orgs/acme/certificate-revocations", params={"ca_id": old["id"]}, headers=ADMIN
        )
        assert [r["certificate_id"] for r in listed.json()["items"]] == [issued["id"]]

    async def test_a_superseded_certificate_cannot_be_revoked_again(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        old = await generate_ca(client, "acme")
        agent = await create_agent(client, "acme", "bot")
        issued, _, _ = await issue_certificate(client, "acme", agent["id"])
        await replace(client, old)
        response = await client.post(
            "/v1/orgs/acme/certificate-revocations",
            json={"certificate_id": issued["id"], "reason": "keyCompromise"},
            headers=ADMIN,
        )
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "CERTIFICATE_ALREADY_REVOKED"
        url = f"/v1/orgs/acme/agents/{agent['id']}/certificates/{issued['id']}"
        assert (await client.get(url, headers=ADMIN)).json()["revocation_reason"] == "superseded"

    async def test_tokens_from_the_old_cas_certificates_die(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        old = await generate_ca(client, "acme")
        agent = await create_agent(client, "acme", "bot", capabilities=["a.read"])
        _, certificate, _ = await issue_certificate(client, "acme", agent["id"])
        form = {"grant_type": "client_credentials", "client_id": spiffe_id("acme", "bot")}
        login = await client.post("/oauth2/token", data=form, headers=proxy_header(certificate))
        assert login.status_code == 200, login.text
        headers = {**bearer(login.json()["access_token"]), **proxy_header(certificate)}
        assert (await client.get("/v1/me", headers=headers)).status_code == 200
        await replace(client, old)
        assert (await client.get("/v1/me", headers=headers)).status_code == 401
        again = await client.post("/oauth2/token", data=form, headers=proxy_header(certificate))
        assert again.status_code == 401, again.text
        assert again.json()["code"] == "CERTIFICATE_CA_REPLACED"


class TestPrivateKeysStayInside:
    async def test_no_response_ever_carries_a_private_key(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        uploaded_ca = TestCa(clock.now())
        responses = [await client.post(CAS, json={"source": "generate"}, headers=ADMIN)]
        responses.append(
            await upload(
                client, certificate_pem=uploaded_ca.pem, private_key_pem=key_pem(uploaded_ca.key)
            )
        )
        generated = responses[0].json()
        responses += [
            await client.post(
                f"{CAS}/{generated['id']}/replace", json={"source": "generate"}, headers=ADMIN
            ),
            await client.get(CAS, headers=ADMIN),
            await client.get(f"{CAS}/{generated['id']}", headers=ADMIN),
            await client.get("/v1/audit", params={"org": "acme"}, headers=ADMIN),
            await client.get("/v1/audit/export", params={"org": "acme"}, headers=ADMIN),
        ]
        assert [r.status_code for r in responses] == [201, 201, 201, 200, 200, 200, 200]
        assert responses[1].json()["can_issue"] is True
        for response in responses:
            assert "PRIVATE KEY" not in response.text
            assert "sealed_key" not in response.text
