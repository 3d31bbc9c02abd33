"""Certificate login at the token endpoint: `tls_client_auth` and `self_signed_tls_client_auth`
(RFC 8705 §2) with the certificate forwarded by a trusted TLS-terminating proxy or taken from
the ASGI TLS extension (`private_key_jwt` with `x5c`: test_certificate_login_x5c.py).

Certificates are real: issued by Tabard from a CSR, issued by the org under a CA it uploaded
(`TestCa`, built with `cryptography`), or self-signed. Claims are read with joserfc from the
published JWKS only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from cryptography import x509
from starlette.types import Receive, Scope, Send

from tabard.api.app import create_app
from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tabard.core.runtime import Runtime
from tests.conftest import create_agent, create_org
from tests.pki.support import CERT_HEADER, MTLS, TestCa, pem, self_signed, spiffe_id
from tests.tokens.certificate_support import (
    CAPABILITIES,
    CertifiedAgent,
    acme_bot,
    another_certificate,
    assert_refused,
    certificate_token,
    holder_login,
    issued_agent,
    login,
    me,
    register_certificate,
    thumbprint,
    upload_ca,
)
from tests.tokens.oauth_checks import assert_invalid_client, denial_reasons
from tests.tokens.support import decode_with_published_keys


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Behind a TLS-terminating proxy on loopback that forwards the client certificate."""
    return dict(MTLS)


@pytest.fixture
async def bot(client: httpx.AsyncClient) -> CertifiedAgent:
    return await acme_bot(client)


@pytest.fixture
async def untrusted(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The same deployment reached from an address that is not a configured proxy."""
    app = create_app(settings, runtime=runtime)
    transport = httpx.ASGITransport(
        app=app, raise_app_exceptions=False, client=("203.0.113.7", 40000)
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://tabard.test") as http:
        yield http


async def assert_unauthenticated(client: httpx.AsyncClient, response: httpx.Response) -> None:
    """No credential was presented at all (plain `invalid_client`, no certificate code)."""
    assert_invalid_client(response)
    assert await denial_reasons(client) == ["no_authentication"]


class TestTlsClientAuthThroughTheProxy:
    async def test_forwarded_certificate_alone_gets_a_token(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        response = await holder_login(client, bot)

        assert response.status_code == 200, response.text
        assert response.json()["token_type"] == "Bearer"
        assert response.headers["cache-control"] == "no-store"

    async def test_token_names_the_agent_its_spiffe_id_and_the_certificate(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        token = await certificate_token(client, bot)

        claims = await decode_with_published_keys(client, token)
        assert claims["sub"] == bot.id
        assert claims["client_id"] == bot.spiffe_id
        assert claims["cert"] == f"{bot.record['ca_id']}/{bot.serial}"
        assert claims["cnf"] == {"x5t#S256": bot.thumbprint}

    async def test_token_works_on_the_api_with_the_same_certificate(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        token = await certificate_token(client, bot)

        response = await me(client, token, bot.header)

        assert response.status_code == 200, response.text
        assert response.json()["id"] == bot.id

    async def test_token_is_refused_on_the_api_without_the_certificate(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        token = await certificate_token(client, bot)

        response = await me(client, token)

        assert response.status_code == 401, response.text
        assert response.json()["code"] == "INVALID_TOKEN"

    async def test_token_is_refused_on_the_api_with_another_certificate_of_the_agent(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        token = await certificate_token(client, bot)
        other = await another_certificate(client, bot)

        response = await me(client, token, other.header)

        assert response.status_code == 401, response.text
        assert response.json()["code"] == "INVALID_TOKEN"

    async def test_client_id_may_be_omitted_and_is_taken_from_the_certificate(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        response = await login(client, bot.header)

        assert response.status_code == 200, response.text
        claims = await decode_with_published_keys(client, response.json()["access_token"])
        assert (claims["sub"], claims["client_id"]) == (bot.id, bot.spiffe_id)

    async def test_certificate_forwarded_from_an_untrusted_address_proves_nothing(
        self, client: httpx.AsyncClient, untrusted: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        response = await holder_login(untrusted, bot)

        await assert_unauthenticated(client, response)

    async def test_unreadable_forwarded_certificate_proves_nothing(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        garbage = {CERT_HEADER: "-----BEGIN%20CERTIFICATE-----%0Azz"}

        response = await login(client, garbage, bot.spiffe_id)

        await assert_unauthenticated(client, response)


class TestTokenLifetimeFollowsTheCertificate:
    async def test_token_never_outlives_the_certificate_it_was_issued_from(
        self, client: httpx.AsyncClient, bot: CertifiedAgent, clock: FrozenClock
    ) -> None:
        # The certificate is valid for 24 h; 10 minutes before its end, a 15-minute token
        # would outlive it.
        clock.advance(24 * 3600 - 10 * 60)

        response = await holder_login(client, bot)

        assert response.status_code == 200, response.text
        assert response.json()["expires_in"] <= 10 * 60
        claims = await decode_with_published_keys(client, response.json()["access_token"])
        assert claims["exp"] <= int(bot.certificate.not_valid_after_utc.timestamp())


@pytest.mark.parametrize(
    "overrides",
    [{**MTLS, "token_rate_limit_per_second": 0.01, "token_rate_limit_burst": 1}],
    ids=["burst-1"],
)
class TestRateLimitOfCertificateLogins:
    async def test_logins_without_client_id_are_limited_per_agent_not_all_together(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        other = await issued_agent(client, "acme", "payroll-bot")
        assert (await login(client, bot.header)).status_code == 200

        assert (await login(client, other.header)).status_code == 200
        again = await login(client, bot.header)
        assert again.status_code == 429, again.text
        assert again.json()["code"] == "RATE_LIMIT_EXCEEDED"


@asynccontextmanager
async def tls_connection(
    settings: Settings, runtime: Runtime, chain: tuple[x509.Certificate, ...]
) -> AsyncIterator[httpx.AsyncClient]:
    """A client on a TLS connection that presented `chain`, as an ASGI server reports it
    (the TLS extension's `client_cert_chain`: PEM, leaf first)."""
    app = create_app(settings, runtime=runtime)

    async def server(scope: Scope, receive: Receive, send: Send) -> None:
        tls = {"client_cert_chain": [pem(certificate) for certificate in chain]}
        extensions = {**scope.get("extensions", {}), "tls": tls}
        await app({**scope, "extensions": extensions}, receive, send)

    transport = httpx.ASGITransport(app=server, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="https://tabard.test") as http:
        yield http


@pytest.mark.parametrize("overrides", [{}], ids=["no-proxy"])
class TestTlsClientAuthOnTheConnection:
    async def test_certificate_of_the_tls_connection_gets_a_bound_token(
        self,
        client: httpx.AsyncClient,
        settings: Settings,
        runtime: Runtime,
        bot: CertifiedAgent,
    ) -> None:
        async with tls_connection(settings, runtime, (bot.certificate,)) as tls:
            response = await login(tls, {}, bot.spiffe_id)
            assert response.status_code == 200, response.text
            token = response.json()["access_token"]
            assert (await me(tls, token)).status_code == 200

        claims = await decode_with_published_keys(client, token)
        assert claims["cnf"] == {"x5t#S256": bot.thumbprint}
        assert (await me(client, token)).status_code == 401

    async def test_forwarded_header_is_ignored_where_no_proxy_is_configured(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        response = await holder_login(client, bot)

        await assert_unauthenticated(client, response)


class TestCertificatesTheOrgIssues:
    """Certificates issued by the org under a CA it uploaded are accepted without being
    registered first: the chain to the CA is the proof."""

    async def test_leaf_of_the_uploaded_root_is_accepted(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        root = TestCa(clock.now())
        ca = await upload_ca(client, "acme", root)
        agent = await create_agent(client, "acme", "invoice-bot", capabilities=CAPABILITIES)
        certificate, key = root.issue(spiffe_id("acme", "invoice-bot"))
        holder = CertifiedAgent(agent, certificate, key)

        token = await certificate_token(client, holder)

        claims = await decode_with_published_keys(client, token)
        assert claims["sub"] == agent["id"]
        assert claims["cert"] == f"{ca['id']}/{holder.serial}"
        assert claims["cnf"] == {"x5t#S256": holder.thumbprint}

    @pytest.mark.parametrize("sent", ["leaf alone", "leaf and intermediate"])
    async def test_leaf_of_an_uploaded_intermediate_is_accepted(
        self, client: httpx.AsyncClient, clock: FrozenClock, sent: str
    ) -> None:
        await create_org(client, "acme")
        root = TestCa(clock.now())
        issuing = TestCa(clock.now(), name="Org Issuing CA", parent=root)
        ca = await upload_ca(client, "acme", root, issuing)
        agent = await create_agent(client, "acme", "invoice-bot", capabilities=CAPABILITIES)
        certificate, key = issuing.issue(spiffe_id("acme", "invoice-bot"))
        chain = (issuing.certificate,) if sent == "leaf and intermediate" else ()
        holder = CertifiedAgent(agent, certificate, key, chain)

        token = await certificate_token(client, holder)

        claims = await decode_with_published_keys(client, token)
        assert claims["cert"] == f"{ca['id']}/{holder.serial}"

    async def test_intermediate_the_client_sends_completes_the_path(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        root = TestCa(clock.now())
        issuing = TestCa(clock.now(), name="Org Issuing CA", parent=root)
        ca = await upload_ca(client, "acme", root)  # the intermediate is not registered
        agent = await create_agent(client, "acme", "invoice-bot", capabilities=CAPABILITIES)
        certificate, key = issuing.issue(spiffe_id("acme", "invoice-bot"))
        holder = CertifiedAgent(agent, certificate, key, (issuing.certificate,))

        token = await certificate_token(client, holder)

        claims = await decode_with_published_keys(client, token)
        assert claims["cert"] == f"{ca['id']}/{holder.serial}"

    async def test_leaf_of_an_unregistered_intermediate_sent_alone_is_untrusted(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        root = TestCa(clock.now())
        issuing = TestCa(clock.now(), name="Org Issuing CA", parent=root)
        await upload_ca(client, "acme", root)
        agent = await create_agent(client, "acme", "invoice-bot", capabilities=CAPABILITIES)
        certificate, key = issuing.issue(spiffe_id("acme", "invoice-bot"))

        response = await holder_login(client, CertifiedAgent(agent, certificate, key))

        await assert_refused(client, response, "CERTIFICATE_UNTRUSTED")


class TestSelfSignedTlsClientAuth:
    async def test_registered_self_signed_certificate_is_accepted(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, "acme", "invoice-bot", capabilities=CAPABILITIES)
        certificate, key = self_signed(clock.now(), spiffe_id("acme", "invoice-bot"))
        registered = await register_certificate(client, agent, certificate)
        assert registered["source"] == "self_signed"

        token = await certificate_token(client, CertifiedAgent(agent, certificate, key))

        claims = await decode_with_published_keys(client, token)
        assert claims["sub"] == agent["id"]
        assert claims["cert"] == f"x5t/{thumbprint(certificate)}"
        assert claims["cnf"] == {"x5t#S256": thumbprint(certificate)}

    async def test_unregistered_self_signed_certificate_is_untrusted(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, "acme", "invoice-bot", capabilities=CAPABILITIES)
        certificate, key = self_signed(clock.now(), spiffe_id("acme", "invoice-bot"))

        response = await holder_login(client, CertifiedAgent(agent, certificate, key))

        await assert_refused(
            client,
            response,
            "CERTIFICATE_UNTRUSTED",
            "a self-signed certificate must be registered by its org first",
        )


class TestDiscovery:
    @pytest.mark.parametrize(
        "path", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
    )
    async def test_metadata_lists_the_certificate_methods(
        self, client: httpx.AsyncClient, path: str
    ) -> None:
        response = await client.get(path)

        assert response.status_code == 200, response.text
        document = response.json()
        methods = document["token_endpoint_auth_methods_supported"]
        assert {"tls_client_auth", "self_signed_tls_client_auth", "private_key_jwt"} <= set(methods)
        assert document["tls_client_certificate_bound_access_tokens"] is True
