"""Certificate revocation (by CA and serial, or by certificate id), its effect on tokens and
logins, each CA's signed CRL (loaded and verified with `cryptography`), and the org's list."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509

from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tests.conftest import ADMIN, bearer, create_agent, create_org, create_org_key
from tests.pki.support import (
    MTLS,
    TestCa,
    generate_ca,
    issue_certificate,
    key_pem,
    pem,
    proxy_header,
    self_signed,
    spiffe_id,
)

REVOCATIONS = "/v1/orgs/acme/certificate-revocations"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Behind a TLS-terminating proxy, so agents can log in with their certificates."""
    return settings.model_copy(update=MTLS)


async def revoke(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post(REVOCATIONS, json=body, headers=ADMIN)


async def revoked(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await revoke(client, **body)
    assert response.status_code == 201, response.text
    revocation: dict[str, Any] = response.json()
    return revocation


async def acme_agent(client: httpx.AsyncClient, name: str = "bot") -> dict[str, Any]:
    await create_org(client, "acme")
    return await create_agent(client, "acme", name, capabilities=["a.read"])


async def upload_ca(client: httpx.AsyncClient, ca: TestCa, **fields: Any) -> dict[str, Any]:
    body = {"source": "upload", "certificate_pem": ca.pem, **fields}
    response = await client.post("/v1/orgs/acme/cas", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    uploaded: dict[str, Any] = response.json()
    return uploaded


async def certificate_login(client: httpx.AsyncClient, certificate: x509.Certificate) -> str:
    form = {"grant_type": "client_credentials", "client_id": spiffe_id("acme", "bot")}
    response = await client.post("/oauth2/token", data=form, headers=proxy_header(certificate))
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def load_crl(client: httpx.AsyncClient, ca: dict[str, Any]) -> x509.CertificateRevocationList:
    response = await client.get(f"/pki/cas/{ca['id']}/crl")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pkix-crl"
    return x509.load_der_x509_crl(response.content)


def reason_in(crl: x509.CertificateRevocationList, serial: str) -> x509.ReasonFlags:
    entry = crl.get_revoked_certificate_by_serial_number(int(serial, 16))
    assert entry is not None, f"serial {serial} is not in the CRL"
    return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason


async def certificate_of(client: httpx.AsyncClient, certificate: dict[str, Any]) -> dict[str, Any]:
    url = f"/v1/orgs/acme/agents/{certificate['agent_id']}/certificates/{certificate['id']}"
    response = await client.get(url, headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class TestRevokeBySerial:
    async def test_a_certificate_tabard_issued_becomes_revoked(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await acme_agent(client)
        ca = await generate_ca(client, "acme")
        issued, _, _ = await issue_certificate(client, "acme", agent["id"])
        body = await revoked(
            client, ca_id=ca["id"], serial=issued["serial"], reason="keyCompromise"
        )
        assert (body["certificate_id"], body["agent_id"]) == (issued["id"], agent["id"])
        assert (body["ca_id"], body["serial"], body["reason"]) == (
            ca["id"],
            issued["serial"],
            "keyCompromise",
        )
        row = await certificate_of(client, issued)
        assert (row["status"], row["revocation_reason"]) == ("revoked", "keyCompromise")
        assert row["revoked_at"] == body["revoked_at"]

    async def test_a_serial_in_colon_separated_upper_case_hex(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await acme_agent(client)
        ca = await generate_ca(client, "acme")
        issued, _, _ = await issue_certificate(client, "acme", agent["id"])
        digits = issued["serial"].upper().zfill(len(issued["serial"]) + len(issued["serial"]) % 2)
        colons = ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))
        body = await revoked(client, ca_id=ca["id"], serial=colons)
        assert (body["certificate_id"], body["serial"]) == (issued["id"], issued["serial"])

    async def test_a_serial_tabard_never_saw_is_revoked_before_its_first_use(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await acme_agent(client)
        org_ca = TestCa(clock.now())
        ca = await upload_ca(client, org_ca)
        certificate, _ = org_ca.issue(spiffe_id("acme", "bot"))
        body = await revoked(client, ca_id=ca["id"], serial=format(certificate.serial_number, "x"))
        assert (body["certificate_id"], body["agent_id"]) == (None, None)
        form = {"grant_type": "client_credentials", "client_id": spiffe_id("acme", "bot")}
        login = await client.post("/oauth2/token", data=form, headers=proxy_header(certificate))
        assert login.status_code == 401, login.text
        assert login.json()["code"] == "CERTIFICATE_REVOKED"

    async def test_revoking_twice_is_a_conflict(self, client: httpx.AsyncClient) -> None:
        agent = await acme_agent(client)
        ca = await generate_ca(client, "acme")
        issued, _, _ = await issue_certificate(client, "acme", agent["id"])
        await revoked(client, ca_id=ca["id"], serial=issued["serial"])
        again = await revoke(client, ca_id=ca["id"], serial=issued["serial"], reason="superseded")
        assert again.status_code == 409, again.text
        assert again.json()["code"] == "CERTIFICATE_ALREADY_REVOKED"
        assert (await certificate_of(client, issued))["revocation_reason"] == "unspecified"

    async def test_a_serial_that_is_not_hex(self, client: httpx.AsyncClient) -> None:
        await acme_agent(client)
        ca = await generate_ca(client, "acme")
        response = await revoke(client, ca_id=ca["id"], serial="not-a-serial")
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "VALIDATION_FAILED"

    async def test_an_unknown_ca(self, client: httpx.AsyncClient) -> None:
        await acme_agent(client)
        response = await revoke(client, ca_id="01a00000-0000-7000-8000-000000000000", serial="1f")
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "CA_NOT_FOUND"

    async def test_a_ca_of_another_org(self, client: httpx.AsyncClient) -> None:
        await acme_agent(client)
        await create_org(client, "globex")
        foreign = await generate_ca(client, "globex")
        response = await revoke(client, ca_id=foreign["id"], serial="1f")
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "CA_NOT_FOUND"


class TestRevokeByCertificateId:
    async def test_a_tabard_issued_certificate(self, client: httpx.AsyncClient) -> None:
        agent = await acme_agent(client)
        ca = await generate_ca(client, "acme")
        issued, _, _ = await issue_certificate(client, "acme", agent["id"])
        body = await revoked(client, certificate_id=issued["id"], reason="privilegeWithdrawn")
        assert (body["ca_id"], body["serial"]) == (ca["id"], issued["serial"])
        assert (await certificate_of(client, issued))["status"] == "revoked"

    async def test_a_self_signed_certificate(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_agent(client)
        certificate, _ = self_signed(clock.now(), spiffe_id("acme", "bot"))
        url = f"/v1/orgs/acme/agents/{agent['id']}/certificates"
        registered = await client.post(
            url, json={"certificate_pem": pem(certificate)}, headers=ADMIN
        )
        assert registered.status_code == 201, registered.text
        body = await revoked(client, certificate_id=registered.json()["id"])
        assert (body["ca_id"], body["serial"]) == (None, format(certificate.serial_number, "x"))
        assert (await certificate_of(client, registered.json()))["status"] == "revoked"
        again = await revoke(client, certificate_id=registered.json()["id"])
        assert again.status_code == 409, again.text
        assert again.json()["code"] == "CERTIFICATE_ALREADY_REVOKED"

    async def test_by_id_after_by_serial_is_a_conflict(self, client: httpx.AsyncClient) -> None:
        agent = await acme_agent(client)
        ca = await generate_ca(client, "acme")
        issued, _, _ = await issue_certificate(client, "acme", agent["id"])
        await revoked(client, ca_id=ca["id"], serial=issued["serial"])
        again = await revoke(client, certificate_id=issued["id"])
        assert again.status_code == 409, again.text
        assert again.json()["code"] == "CERTIFICATE_ALREADY_REVOKED"

    async def test_naming_the_certificate_both_ways_or_not_at_all(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await acme_agent(client)
        ca = await generate_ca(client, "acme")
        issued, _, _ = await issue_certificate(client, "acme", agent["id"])
        both = await revoke(
            client, certificate_id=issued["id"], ca_id=ca["id"], serial=issued["serial"]
        )
        assert both.status_code == 422, both.text
        assert (await revoke(client, reason="keyCompromise")).status_code == 422
        assert (await revoke(client, ca_id=ca["id"])).status_code == 422
        assert (await certificate_of(client, issued))["status"] == "active"


class TestRevocationEndsTokens:
    async def test_the_agents_access_token_dies_at_once(self, client: httpx.AsyncClient) -> None:
        agent = await acme_agent(client)
        ca = await generate_ca(client, "acme")
        issued, certificate, _ = await issue_certificate(client, "acme", agent["id"])
        token = await certificate_login(client, certificate)
        headers = {**bearer(token), **proxy_header(certificate)}
        assert (await client.get("/v1/me", headers=headers)).status_code == 200
        await revoked(client, ca_id=ca["id"], serial=issued["serial"], reason="keyCompromise")
        after = await client.get("/v1/me", headers=headers)
        assert after.status_code == 401, after.text


class TestCrl:
    async def test_the_crl_is_signed_by_the_ca_and_lists_revoked_serials_with_reasons(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_agent(client)
        ca = await generate_ca(client, "acme")
        first, _, _ = await issue_certificate(client, "acme", agent["id"])
        second, _, _ = await issue_certificate(client, "acme", agent["id"])
        kept, _, _ = await issue_certificate(client, "acme", agent["id"])
        await revoked(client, certificate_id=first["id"], reason="keyCompromise")
        await revoked(client, certificate_id=second["id"], reason="affiliationChanged")
        crl = await load_crl(client, ca)
        anchor = x509.load_pem_x509_certificate(ca["certificate_pem"].encode())
        assert crl.is_signature_valid(anchor.public_key())  # type: ignore[arg-type]
        assert crl.issuer == anchor.subject
        now = clock.now().replace(microsecond=0)
        assert crl.last_update_utc == now
        assert crl.next_update_utc == now + timedelta(hours=1)
        assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > 0
        assert len(crl) == 2
        assert reason_in(crl, first["serial"]) is x509.ReasonFlags.key_compromise
        assert reason_in(crl, second["serial"]) is x509.ReasonFlags.affiliation_changed
        assert crl.get_revoked_certificate_by_serial_number(int(kept["serial"], 16)) is None

    async def test_a_ca_without_revocations_publishes_an_empty_crl(
        self, client: httpx.AsyncClient
    ) -> None:
        await acme_agent(client)
        ca = await generate_ca(client, "acme")
        crl = await load_crl(client, ca)
        assert len(crl) == 0
        anchor = x509.load_pem_x509_certificate(ca["certificate_pem"].encode())
        assert crl.is_signature_valid(anchor.public_key())  # type: ignore[arg-type]

    async def test_an_unchanged_crl_is_served_again_then_reissued_with_a_higher_number(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await acme_agent(client)
        ca = await generate_ca(client, "acme")
        first = await crl_bytes(client, ca)
        clock.advance(299)  # within the 5 minutes any cache may keep it (Cache-Control)
        assert await crl_bytes(client, ca) == first
        clock.advance(2)
        reissued = x509.load_der_x509_crl(await crl_bytes(client, ca))
        assert crl_number(reissued) > crl_number(x509.load_der_x509_crl(first))
        assert reissued.last_update_utc == clock.now().replace(microsecond=0)

    async def test_a_revocation_is_in_the_next_crl_at_once(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await acme_agent(client)
        ca = await generate_ca(client, "acme")
        first, _, _ = await issue_certificate(client, "acme", agent["id"])
        second, _, _ = await issue_certificate(client, "acme", agent["id"])
        await revoked(client, certificate_id=first["id"], reason="keyCompromise")
        before = await load_crl(client, ca)
        clock.advance(1)
        await revoked(client, certificate_id=second["id"], reason="keyCompromise")
        after = await load_crl(client, ca)
        assert (len(before), len(after)) == (1, 2)
        assert reason_in(after, second["serial"]) is x509.ReasonFlags.key_compromise
        assert crl_number(after) > crl_number(before)

    async def test_an_uploaded_ca_with_its_key_lists_serials_never_seen(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await acme_agent(client)
        org_ca = TestCa(clock.now())
        ca = await upload_ca(client, org_ca, private_key_pem=key_pem(org_ca.key))
        certificate, _ = org_ca.issue(spiffe_id("acme", "bot"))
        serial = format(certificate.serial_number, "x")
        await revoked(client, ca_id=ca["id"], serial=serial, reason="cessationOfOperation")
        crl = await load_crl(client, ca)
        assert crl.is_signature_valid(org_ca.key.public_key())
        assert reason_in(crl, serial) is x509.ReasonFlags.cessation_of_operation

    async def test_an_unknown_ca_has_no_crl(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/pki/cas/01a00000-0000-7000-8000-000000000000/crl")
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "CA_NOT_FOUND"

    async def test_an_uploaded_ca_without_its_key_cannot_sign_one(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await acme_agent(client)
        ca = await upload_ca(client, TestCa(clock.now()))
        response = await client.get(f"/pki/cas/{ca['id']}/crl")
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "CA_KEY_UNAVAILABLE"


class TestListRevocations:
    async def test_filters_by_ca_agent_reason_and_time(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        bot = await acme_agent(client)
        other = await create_agent(client, "acme", "other-bot")
        first_ca = await generate_ca(client, "acme")
        second_ca = await generate_ca(client, "acme")
        one, _, _ = await issue_certificate(client, "acme", bot["id"], ca_id=first_ca["id"])
        two, _, _ = await issue_certificate(client, "acme", other["id"], ca_id=first_ca["id"])
        three, _, _ = await issue_certificate(client, "acme", bot["id"], ca_id=second_ca["id"])
        r1 = await revoked(client, certificate_id=one["id"], reason="keyCompromise")
        r2 = await revoked(client, certificate_id=two["id"], reason="superseded")
        clock.advance(60)
        r3 = await revoked(client, certificate_id=three["id"])

        async def listed(**params: str) -> list[str]:
            response = await client.get(REVOCATIONS, params=params, headers=ADMIN)
            assert response.status_code == 200, response.text
            return [item["id"] for item in response.json()["items"]]

        assert sorted(await listed()) == sorted([r1["id"], r2["id"], r3["id"]])
        assert await listed(ca_id=second_ca["id"]) == [r3["id"]]
        assert await listed(agent_id=other["id"]) == [r2["id"]]
        assert await listed(reason="keyCompromise") == [r1["id"]]
        assert await listed(since=r3["revoked_at"]) == [r3["id"]]
        assert sorted(await listed(ca_id=first_ca["id"], agent_id=bot["id"])) == [r1["id"]]
        unknown = await client.get(REVOCATIONS, params={"reason": "certificateHold"}, headers=ADMIN)
        assert unknown.status_code == 422, unknown.text

    async def test_a_since_without_a_time_zone_is_a_validation_error(
        self, client: httpx.AsyncClient
    ) -> None:
        await acme_agent(client)
        params = {"since": "2026-01-01T00:00:00"}
        response = await client.get(REVOCATIONS, params=params, headers=ADMIN)
        assert response.status_code == 422, response.text

    async def test_pages_one_at_a_time_with_the_cursor(self, client: httpx.AsyncClient) -> None:
        agent = await acme_agent(client)
        await generate_ca(client, "acme")
        expected = []
        for _ in range(3):
            issued, _, _ = await issue_certificate(client, "acme", agent["id"])
            expected.append((await revoked(client, certificate_id=issued["id"]))["id"])
        seen: list[str] = []
        params: dict[str, str | int] = {"limit": 1}
        for _ in range(3):
            response = await client.get(REVOCATIONS, params=params, headers=ADMIN)
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["items"]) == 1
            seen.append(page["items"][0]["id"])
            params["cursor"] = page["next_cursor"]
        assert page["next_cursor"] is None
        assert sorted(seen) == sorted(expected)
        assert seen == sorted(seen, reverse=True)  # newest first

    async def test_another_org_gets_404(self, client: httpx.AsyncClient) -> None:
        agent = await acme_agent(client)
        await generate_ca(client, "acme")
        issued, _, _ = await issue_certificate(client, "acme", agent["id"])
        await revoked(client, certificate_id=issued["id"])
        await create_org(client, "globex")
        intruder = bearer(await create_org_key(client, "globex"))
        response = await client.get(REVOCATIONS, headers=intruder)
        assert response.status_code == 404, response.text
        own = await client.get("/v1/orgs/globex/certificate-revocations", headers=intruder)
        assert own.json()["items"] == []


class TestDecommissionRevokes:
    async def test_a_decommissioned_agents_certificates_cease_operation(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await acme_agent(client)
        ca = await generate_ca(client, "acme")
        active, _, _ = await issue_certificate(client, "acme", agent["id"])
        compromised, _, _ = await issue_certificate(client, "acme", agent["id"])
        await revoked(client, certificate_id=compromised["id"], reason="keyCompromise")
        url = f"/v1/orgs/acme/agents/{agent['id']}/decommission"
        response = await client.post(url, headers=ADMIN)
        assert response.status_code == 200, response.text
        row = await certificate_of(client, active)
        assert (row["status"], row["revocation_reason"]) == ("revoked", "cessationOfOperation")
        assert (await certificate_of(client, compromised))["revocation_reason"] == "keyCompromise"
        listed = await client.get(
            REVOCATIONS, params={"reason": "cessationOfOperation"}, headers=ADMIN
        )
        assert [item["certificate_id"] for item in listed.json()["items"]] == [active["id"]]
        crl = await load_crl(client, ca)
        assert reason_in(crl, active["serial"]) is x509.ReasonFlags.cessation_of_operation
        assert reason_in(crl, compromised["serial"]) is x509.ReasonFlags.key_compromise


async def crl_bytes(client: httpx.AsyncClient, ca: dict[str, Any]) -> bytes:
    response = await client.get(f"/pki/cas/{ca['id']}/crl")
    assert response.status_code == 200, response.text
    return response.content


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
