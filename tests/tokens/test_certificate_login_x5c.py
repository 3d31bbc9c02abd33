"""`private_key_jwt` with the agent's certificate in the assertion's `x5c` header (RFC 7523
§2.2, RFC 7515 §4.1.6): no mutual TLS; the assertion's signature by the certificate's key is
the proof of possession, then the certificate goes through the same checks as a presented one.
The token names the certificate (`cert`) but is not bound to it (no `cnf`).

Assertions are signed with joserfc; certificates are real (Tabard-issued, or issued by the org
under an uploaded `TestCa`).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tabard.core.clock import FrozenClock
from tests.conftest import create_agent, create_org
from tests.pki.support import TestCa, ec_key, spiffe_id
from tests.tokens.certificate_support import (
    CAPABILITIES,
    CertifiedAgent,
    X5cSigner,
    acme_bot,
    assert_refused,
    assertion_login,
    me,
    upload_ca,
)
from tests.tokens.oauth_checks import assert_invalid_client, denial_reasons
from tests.tokens.support import decode_with_published_keys


@pytest.fixture
async def bot(client: httpx.AsyncClient) -> CertifiedAgent:
    return await acme_bot(client)


class TestPrivateKeyJwtWithX5c:
    async def test_assertion_signed_with_the_certificate_key_gets_an_unbound_token(
        self, client: httpx.AsyncClient, bot: CertifiedAgent, clock: FrozenClock
    ) -> None:
        response = await assertion_login(client, X5cSigner(bot, clock).assertion())

        assert response.status_code == 200, response.text
        claims = await decode_with_published_keys(client, response.json()["access_token"])
        assert (claims["sub"], claims["client_id"]) == (bot.id, bot.spiffe_id)
        assert claims["cert"] == f"{bot.record['ca_id']}/{bot.serial}"
        assert "cnf" not in claims
        assert (await me(client, response.json()["access_token"])).status_code == 200

    async def test_chain_in_x5c_completes_the_path_to_the_uploaded_root(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        root = TestCa(clock.now())
        issuing = TestCa(clock.now(), name="Org Issuing CA", parent=root)
        ca = await upload_ca(client, "acme", root)
        agent = await create_agent(client, "acme", "invoice-bot", capabilities=CAPABILITIES)
        certificate, key = issuing.issue(spiffe_id("acme", "invoice-bot"))
        holder = CertifiedAgent(agent, certificate, key, (issuing.certificate,))

        response = await assertion_login(client, X5cSigner(holder, clock).assertion())

        assert response.status_code == 200, response.text
        claims = await decode_with_published_keys(client, response.json()["access_token"])
        assert claims["cert"] == f"{ca['id']}/{holder.serial}"

    async def test_assertion_signed_with_another_key_is_invalid_client(
        self, client: httpx.AsyncClient, bot: CertifiedAgent, clock: FrozenClock
    ) -> None:
        assertion = X5cSigner(bot, clock).assertion(signer=ec_key())

        response = await assertion_login(client, assertion)

        assert_invalid_client(response)
        assert await denial_reasons(client) == ["assertion_signature_invalid"]

    async def test_replayed_assertion_is_refused(
        self, client: httpx.AsyncClient, bot: CertifiedAgent, clock: FrozenClock
    ) -> None:
        assertion = X5cSigner(bot, clock).assertion()
        assert (await assertion_login(client, assertion)).status_code == 200

        response = await assertion_login(client, assertion)

        assert_invalid_client(response)
        assert await denial_reasons(client) == ["assertion_replayed"]

    @pytest.mark.parametrize(
        "x5c_value",
        [["bm90IGEgY2VydGlmaWNhdGU="], ["not base64!"], []],
        ids=["not-der", "not-base64", "empty"],
    )
    async def test_malformed_x5c_is_certificate_malformed(
        self, client: httpx.AsyncClient, bot: CertifiedAgent, clock: FrozenClock, x5c_value: Any
    ) -> None:
        assertion = X5cSigner(bot, clock).assertion(x5c_value=x5c_value)

        response = await assertion_login(client, assertion)

        await assert_refused(
            client,
            response,
            "CERTIFICATE_MALFORMED",
            "The client certificate cannot be read",
            org_id=None,
        )

    async def test_x5c_certificate_is_checked_like_a_presented_one(
        self, client: httpx.AsyncClient, bot: CertifiedAgent, clock: FrozenClock
    ) -> None:
        stranger = TestCa(clock.now(), name="Not the org's CA")
        certificate, key = stranger.issue(bot.spiffe_id)
        forged = bot.with_certificate(certificate, key)

        response = await assertion_login(client, X5cSigner(forged, clock).assertion())

        await assert_refused(client, response, "CERTIFICATE_UNTRUSTED")

    async def test_assertion_of_another_issuer_is_refused(
        self, client: httpx.AsyncClient, bot: CertifiedAgent, clock: FrozenClock
    ) -> None:
        assertion = X5cSigner(bot, clock).assertion(iss=spiffe_id("acme", "payroll-bot"))

        response = await assertion_login(client, assertion)

        assert_invalid_client(response)
        assert await denial_reasons(client) == ["assertion_issuer_mismatch"]

    async def test_expired_assertion_is_refused(
        self, client: httpx.AsyncClient, bot: CertifiedAgent, clock: FrozenClock
    ) -> None:
        assertion = X5cSigner(bot, clock).assertion()
        clock.advance(120)

        response = await assertion_login(client, assertion)

        assert_invalid_client(response)
        assert await denial_reasons(client) == ["assertion_expired"]
