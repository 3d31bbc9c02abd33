"""Refused certificate logins (RFC 8705 §2): each check of `pki.login` answers 401
`invalid_client` with its own stable `code` (the client proved it holds the certificate's key,
so the reason is no oracle), and the org's audit log records `token.denied` with that reason.

Refusals that happen before the certificate names a known org of this trust domain are audited
on the platform's log (`org_id` null).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tabard.core.clock import FrozenClock
from tests.conftest import ADMIN, create_agent, create_org
from tests.pki.support import MTLS, PrivateKey, TestCa, proxy_header, self_signed, spiffe_id
from tests.tokens.certificate_support import (
    CAPABILITIES,
    CertifiedAgent,
    acme_bot,
    assert_refused,
    holder_login,
    login,
    register_certificate,
    upload_ca,
)

DEFAULT_DESCRIPTIONS = {
    "CERTIFICATE_UNTRUSTED": "The certificate does not chain to an active CA of its org",
    "CERTIFICATE_CA_REPLACED": "The certificate was issued by a CA that has been replaced",
    "CERTIFICATE_EXPIRED": "The certificate has expired",
    "CERTIFICATE_NOT_YET_VALID": "The certificate is not valid yet",
}
SPIFFE_ID_RULE = (
    "the certificate must carry exactly one URI SAN, the agent's SPIFFE ID "
    "(spiffe://<trust domain>/org/<org>/agent/<name>)"
)


@pytest.fixture
def overrides() -> dict[str, Any]:
    return dict(MTLS)


@pytest.fixture
async def bot(client: httpx.AsyncClient) -> CertifiedAgent:
    return await acme_bot(client)


@pytest.fixture
async def own_ca(client: httpx.AsyncClient, clock: FrozenClock) -> TestCa:
    """Org `acme` (agent `invoice-bot`) with a CA of its own, uploaded to Tabard."""
    await create_org(client, "acme")
    root = TestCa(clock.now())
    await upload_ca(client, "acme", root)
    return root


async def org_issued(
    client: httpx.AsyncClient, ca: TestCa, uri: str | None, **issue: Any
) -> CertifiedAgent:
    """Agent `invoice-bot` of acme with a certificate `ca` issued outside Tabard for `uri`."""
    agent = await create_agent(client, "acme", "invoice-bot", capabilities=CAPABILITIES)
    certificate, key = ca.issue(uri, **issue)
    return CertifiedAgent(agent, certificate, key)


INVOICE_BOT = spiffe_id("acme", "invoice-bot")


def ca_certificate_for(issuer: TestCa, uri: str, now: datetime) -> x509.Certificate:
    """A certificate like an agent's (SPIFFE ID, clientAuth) that also says CA=true."""
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent")]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )


class TestUntrustedCertificates:
    async def test_certificate_of_another_orgs_ca_is_untrusted(
        self, client: httpx.AsyncClient, bot: CertifiedAgent, clock: FrozenClock
    ) -> None:
        await create_org(client, "globex")
        globex_ca = TestCa(clock.now(), name="Globex CA")
        await upload_ca(client, "globex", globex_ca)
        certificate, key = globex_ca.issue(bot.spiffe_id)

        response = await holder_login(client, bot.with_certificate(certificate, key))

        description = DEFAULT_DESCRIPTIONS["CERTIFICATE_UNTRUSTED"]
        await assert_refused(client, response, "CERTIFICATE_UNTRUSTED", description)

    async def test_certificate_of_a_ca_nobody_uploaded_is_untrusted(
        self, client: httpx.AsyncClient, bot: CertifiedAgent, clock: FrozenClock
    ) -> None:
        certificate, key = TestCa(clock.now(), name="Random CA").issue(bot.spiffe_id)

        response = await holder_login(client, bot.with_certificate(certificate, key))

        description = DEFAULT_DESCRIPTIONS["CERTIFICATE_UNTRUSTED"]
        await assert_refused(client, response, "CERTIFICATE_UNTRUSTED", description)

    async def test_certificate_of_an_org_that_does_not_exist_is_untrusted(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        certificate, _ = TestCa(clock.now()).issue(spiffe_id("nowhere", "bot"))

        response = await login(client, proxy_header(certificate), spiffe_id("nowhere", "bot"))

        await assert_refused(client, response, "CERTIFICATE_UNTRUSTED", org_id=None)


class TestReplacedCa:
    async def test_certificate_tabard_issued_under_a_replaced_ca_is_refused(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        url = f"/v1/orgs/acme/cas/{bot.record['ca_id']}/replace"
        replaced = await client.post(url, json={"source": "generate"}, headers=ADMIN)
        assert replaced.status_code == 201, replaced.text

        response = await holder_login(client, bot)

        description = DEFAULT_DESCRIPTIONS["CERTIFICATE_CA_REPLACED"]
        await assert_refused(client, response, "CERTIFICATE_CA_REPLACED", description)

    async def test_certificate_the_org_issued_under_its_replaced_ca_is_refused(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        root = TestCa(clock.now())
        ca = await upload_ca(client, "acme", root)
        holder = await org_issued(client, root, INVOICE_BOT)
        url = f"/v1/orgs/acme/cas/{ca['id']}/replace"
        replaced = await client.post(url, json={"source": "generate"}, headers=ADMIN)
        assert replaced.status_code == 201, replaced.text

        response = await holder_login(client, holder)

        await assert_refused(client, response, "CERTIFICATE_CA_REPLACED")


class TestValidityWindow:
    async def test_certificate_past_its_lifetime_is_expired(
        self, client: httpx.AsyncClient, bot: CertifiedAgent, clock: FrozenClock
    ) -> None:
        clock.advance(timedelta(hours=25).total_seconds())  # issued for the default 24 h

        response = await holder_login(client, bot)

        description = DEFAULT_DESCRIPTIONS["CERTIFICATE_EXPIRED"]
        await assert_refused(client, response, "CERTIFICATE_EXPIRED", description)

    async def test_certificate_issued_with_a_window_in_the_past_is_expired(
        self, client: httpx.AsyncClient, own_ca: TestCa, clock: FrozenClock
    ) -> None:
        start = clock.now() - timedelta(days=2)
        holder = await org_issued(
            client, own_ca, INVOICE_BOT, not_before=start, lifetime=timedelta(days=1)
        )

        response = await holder_login(client, holder)

        description = DEFAULT_DESCRIPTIONS["CERTIFICATE_EXPIRED"]
        await assert_refused(client, response, "CERTIFICATE_EXPIRED", description)

    async def test_certificate_whose_window_starts_later_is_not_yet_valid(
        self, client: httpx.AsyncClient, own_ca: TestCa, clock: FrozenClock
    ) -> None:
        start = clock.now() + timedelta(hours=1)
        holder = await org_issued(client, own_ca, INVOICE_BOT, not_before=start)

        response = await holder_login(client, holder)

        description = DEFAULT_DESCRIPTIONS["CERTIFICATE_NOT_YET_VALID"]
        await assert_refused(client, response, "CERTIFICATE_NOT_YET_VALID", description)

    async def test_registered_self_signed_certificate_past_its_lifetime_is_expired(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, "acme", "invoice-bot", capabilities=CAPABILITIES)
        certificate, key = self_signed(clock.now(), INVOICE_BOT)  # valid for 30 days
        await register_certificate(client, agent, certificate)
        clock.advance(timedelta(days=31).total_seconds())

        response = await holder_login(client, CertifiedAgent(agent, certificate, key))

        await assert_refused(client, response, "CERTIFICATE_EXPIRED")


WEAK_KEYS: dict[str, tuple[Callable[[], PrivateKey], str]] = {
    "rsa-1024": (
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),  # noqa: S505
        "an RSA key of 1024 bits (at least 2048 required)",
    ),
    "ec-p521": (
        lambda: ec.generate_private_key(ec.SECP521R1()),
        "an EC key on curve secp521r1 (P-256 or P-384 required)",
    ),
    "ec-secp256k1": (
        lambda: ec.generate_private_key(ec.SECP256K1()),
        "an EC key on curve secp256k1 (P-256 or P-384 required)",
    ),
}


class TestKeyAndUsage:
    @pytest.mark.parametrize("kind", list(WEAK_KEYS))
    async def test_key_outside_the_rules_is_too_weak(
        self, client: httpx.AsyncClient, own_ca: TestCa, kind: str
    ) -> None:
        # `cryptography`'s path validation accepts these leaves; Tabard's own key rule refuses.
        make_key, problem = WEAK_KEYS[kind]
        holder = await org_issued(client, own_ca, INVOICE_BOT, key=make_key())

        response = await holder_login(client, holder)

        await assert_refused(
            client, response, "CERTIFICATE_KEY_TOO_WEAK", f"the certificate has {problem}"
        )

    async def test_ca_certificate_presented_as_a_leaf_is_untrusted(
        self, client: httpx.AsyncClient, own_ca: TestCa, clock: FrozenClock
    ) -> None:
        # `CERTIFICATE_IS_CA` is never reached at login: `cryptography`'s path validation refuses
        # an end-entity certificate asserting CA=true before Tabard's own rules run, and a
        # self-signed CA certificate cannot be registered.
        await create_agent(client, "acme", "invoice-bot", capabilities=CAPABILITIES)
        certificate = ca_certificate_for(own_ca, INVOICE_BOT, clock.now())

        response = await login(client, proxy_header(certificate), INVOICE_BOT)

        description = DEFAULT_DESCRIPTIONS["CERTIFICATE_UNTRUSTED"]
        await assert_refused(client, response, "CERTIFICATE_UNTRUSTED", description)

    async def test_certificate_without_client_auth_usage_is_refused(
        self, client: httpx.AsyncClient, own_ca: TestCa
    ) -> None:
        holder = await org_issued(client, own_ca, INVOICE_BOT, client_auth=False)

        response = await holder_login(client, holder)

        await assert_refused(
            client,
            response,
            "CERTIFICATE_NOT_CLIENT_AUTH",
            "the certificate's extended key usage must include clientAuth",
        )


class TestSpiffeId:
    async def test_certificate_without_a_uri_san_is_refused(
        self, client: httpx.AsyncClient, own_ca: TestCa
    ) -> None:
        holder = await org_issued(client, own_ca, None)

        response = await login(client, holder.header)

        await assert_refused(
            client, response, "CERTIFICATE_SPIFFE_ID_INVALID", SPIFFE_ID_RULE, org_id=None
        )

    async def test_certificate_with_two_uri_sans_is_refused(
        self, client: httpx.AsyncClient, own_ca: TestCa
    ) -> None:
        extra = (spiffe_id("acme", "payroll-bot"),)
        holder = await org_issued(client, own_ca, INVOICE_BOT, extra_uris=extra)

        response = await holder_login(client, holder)

        await assert_refused(
            client, response, "CERTIFICATE_SPIFFE_ID_INVALID", SPIFFE_ID_RULE, org_id=None
        )

    async def test_uri_san_that_is_no_agent_spiffe_id_is_refused(
        self, client: httpx.AsyncClient, own_ca: TestCa
    ) -> None:
        holder = await org_issued(client, own_ca, "spiffe://127.0.0.1/ns/default/sa/invoice-bot")

        response = await login(client, holder.header)

        await assert_refused(
            client, response, "CERTIFICATE_SPIFFE_ID_INVALID", SPIFFE_ID_RULE, org_id=None
        )

    async def test_client_id_other_than_the_certificates_spiffe_id_is_refused(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        other = spiffe_id("acme", "payroll-bot")

        response = await login(client, bot.header, other)

        await assert_refused(
            client,
            response,
            "CERTIFICATE_SPIFFE_ID_MISMATCH",
            f"the certificate speaks for {bot.spiffe_id}, not for {other}",
            org_id=None,
        )

    @pytest.mark.parametrize("client_id", ["named", "omitted"])
    async def test_spiffe_id_of_another_trust_domain_is_refused(
        self, client: httpx.AsyncClient, own_ca: TestCa, client_id: str
    ) -> None:
        foreign = spiffe_id("acme", "invoice-bot", trust_domain="other.example")
        holder = await org_issued(client, own_ca, foreign)

        response = await login(client, holder.header, foreign if client_id == "named" else None)

        await assert_refused(
            client,
            response,
            "CERTIFICATE_SPIFFE_ID_MISMATCH",
            f"the certificate speaks for {foreign}, outside the trust domain 127.0.0.1",
            org_id=None,
        )


class TestAgentAndOrg:
    async def test_certificate_of_an_agent_that_does_not_exist_is_refused(
        self, client: httpx.AsyncClient, own_ca: TestCa
    ) -> None:
        ghost = spiffe_id("acme", "ghost-bot")
        certificate, _ = own_ca.issue(ghost)

        response = await login(client, proxy_header(certificate), ghost)

        await assert_refused(client, response, "AGENT_NOT_FOUND", "No such agent")

    @pytest.mark.parametrize(
        ("action", "status"), [("suspend", "suspended"), ("decommission", "decommissioned")]
    )
    async def test_certificate_of_an_inactive_agent_is_refused(
        self, client: httpx.AsyncClient, bot: CertifiedAgent, action: str, status: str
    ) -> None:
        url = f"/v1/orgs/acme/agents/{bot.id}/{action}"
        assert (await client.post(url, headers=ADMIN)).status_code == 200

        response = await holder_login(client, bot)

        await assert_refused(client, response, "AGENT_NOT_ACTIVE", f"the agent is {status}")

    async def test_certificate_of_an_agent_of_a_suspended_org_is_refused(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        assert (await client.post("/v1/orgs/acme/suspend", headers=ADMIN)).status_code == 200

        response = await holder_login(client, bot)

        await assert_refused(client, response, "ORG_SUSPENDED", "The organization is suspended")
