"""Sender-constrained access tokens: DPoP (RFC 9449) and certificate binding (RFC 8705).

DPoP proofs are built here with joserfc, independently of Tabard's code; client certificates are
real X.509 certificates made with `cryptography`, forwarded URL-encoded as a TLS-terminating proxy
(nginx's `$ssl_client_escaped_cert`) would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from joserfc import jws
from joserfc.jwk import ECKey

from tabard.api.app import create_app
from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tabard.core.runtime import Runtime
from tests.conftest import ADMIN, bearer
from tests.tokens.support import (
    ISSUER,
    TOKEN_URL,
    AgentClient,
    access_token,
    agent_client,
    decode_with_published_keys,
    request_token,
)

ME_URL = f"{ISSUER}/v1/me"  # htu: the public URL plus the path (RFC 9449 §4.3)
TOKEN_ENDPOINT = f"{ISSUER}{TOKEN_URL}"
CERT_HEADER = "X-Client-Cert"
MTLS = {"mtls_client_cert_header": CERT_HEADER, "trusted_proxies": ["127.0.0.1/32", "::1"]}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class DpopKey:
    """A DPoP client key that signs proofs with joserfc."""

    clock: FrozenClock
    key: ECKey = field(default_factory=lambda: ECKey.generate_key("P-256"))

    def proof(
        self, htm: str, htu: str, *, token: str | None = None, nonce: str | None = None
    ) -> str:
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.key.as_dict(private=False)}
        claims: dict[str, Any] = {
            "jti": uuid.uuid4().hex,
            "htm": htm,
            "htu": htu,
            "iat": int(self.clock.timestamp()),
        }
        if token is not None:
            claims["ath"] = b64url(hashlib.sha256(token.encode()).digest())
        if nonce is not None:
            claims["nonce"] = nonce
        return jws.serialize_compact(header, json.dumps(claims), self.key, algorithms=["ES256"])

    @property
    def jkt(self) -> str:
        return self.key.thumbprint()


@pytest.fixture
async def acme(client: httpx.AsyncClient) -> AgentClient:
    return await agent_client(client, "acme", "invoice-bot")


@pytest.fixture
def dpop_key(clock: FrozenClock) -> DpopKey:
    return DpopKey(clock)


async def dpop_token(client: httpx.AsyncClient, agent: AgentClient, key: DpopKey) -> str:
    response = await request_token(client, agent, {"DPoP": key.proof("POST", TOKEN_ENDPOINT)})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def me_with_dpop(client: httpx.AsyncClient, token: str, proof: str | None) -> httpx.Response:
    headers = {"Authorization": f"DPoP {token}"}
    if proof is not None:
        headers["DPoP"] = proof
    return await client.get("/v1/me", headers=headers)


def assert_refused(response: httpx.Response, error: str = "") -> None:
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "INVALID_TOKEN"
    assert f'error="{error}' in response.headers["www-authenticate"]


class TestDpopAtTheTokenEndpoint:
    async def test_token_is_bound_to_the_proof_key(
        self, client: httpx.AsyncClient, acme: AgentClient, dpop_key: DpopKey
    ) -> None:
        response = await request_token(
            client, acme, {"DPoP": dpop_key.proof("POST", TOKEN_ENDPOINT)}
        )

        assert response.status_code == 200, response.text
        assert response.json()["token_type"] == "DPoP"
        assert response.headers["DPoP-Nonce"]
        claims = await decode_with_published_keys(client, response.json()["access_token"])
        assert claims["cnf"] == {"jkt": dpop_key.jkt}

    async def test_proof_for_another_endpoint_is_invalid_dpop_proof(
        self, client: httpx.AsyncClient, acme: AgentClient, dpop_key: DpopKey
    ) -> None:
        proof = dpop_key.proof("POST", f"{ISSUER}/oauth2/introspect")

        response = await request_token(client, acme, {"DPoP": proof})

        assert response.status_code == 400
        assert response.json()["error"] == "invalid_dpop_proof"

    async def test_introspection_names_the_dpop_token_type(
        self, client: httpx.AsyncClient, acme: AgentClient, dpop_key: DpopKey
    ) -> None:
        token = await dpop_token(client, acme, dpop_key)

        response = await client.post("/oauth2/introspect", data={"token": token}, headers=ADMIN)

        assert response.json()["active"] is True
        assert response.json()["token_type"] == "DPoP"
        assert response.json()["cnf"] == {"jkt": dpop_key.jkt}

    @pytest.mark.parametrize("overrides", [{"dpop_nonce_required": True}], ids=["nonce"])
    async def test_required_nonce_is_announced_and_a_retry_with_it_succeeds(
        self, client: httpx.AsyncClient, acme: AgentClient, dpop_key: DpopKey
    ) -> None:
        first = await request_token(client, acme, {"DPoP": dpop_key.proof("POST", TOKEN_ENDPOINT)})

        assert first.status_code == 400, first.text
        assert first.json()["error"] == "use_dpop_nonce"
        nonce = first.headers["DPoP-Nonce"]
        proof = dpop_key.proof("POST", TOKEN_ENDPOINT, nonce=nonce)
        retry = await request_token(client, acme, {"DPoP": proof})
        assert retry.status_code == 200, retry.text
        assert retry.json()["token_type"] == "DPoP"


class TestDpopOnTheApi:
    @pytest.mark.parametrize("overrides", [{"dpop_nonce_required": True}], ids=["nonce"])
    async def test_required_nonce_is_announced_by_the_api_and_a_retry_succeeds(
        self, client: httpx.AsyncClient, acme: AgentClient, dpop_key: DpopKey
    ) -> None:
        first = await request_token(client, acme, {"DPoP": dpop_key.proof("POST", TOKEN_ENDPOINT)})
        proof = dpop_key.proof("POST", TOKEN_ENDPOINT, nonce=first.headers["DPoP-Nonce"])
        issued = await request_token(client, acme, {"DPoP": proof})
        token = issued.json()["access_token"]

        refused = await me_with_dpop(client, token, dpop_key.proof("GET", ME_URL, token=token))

        assert_refused(refused, "use_dpop_nonce")
        nonce = refused.headers["DPoP-Nonce"]
        retry = dpop_key.proof("GET", ME_URL, token=token, nonce=nonce)
        assert (await me_with_dpop(client, token, retry)).status_code == 200

    async def test_token_with_a_fresh_proof_is_accepted(
        self, client: httpx.AsyncClient, acme: AgentClient, dpop_key: DpopKey
    ) -> None:
        token = await dpop_token(client, acme, dpop_key)

        response = await me_with_dpop(client, token, dpop_key.proof("GET", ME_URL, token=token))

        assert response.status_code == 200, response.text
        assert response.json()["id"] == acme.agent["id"]

    async def test_token_sent_as_bearer_is_refused(
        self, client: httpx.AsyncClient, acme: AgentClient, dpop_key: DpopKey
    ) -> None:
        token = await dpop_token(client, acme, dpop_key)
        headers = {**bearer(token), "DPoP": dpop_key.proof("GET", ME_URL, token=token)}

        response = await client.get("/v1/me", headers=headers)

        assert_refused(response, "invalid_token")
        assert response.headers["www-authenticate"].startswith("DPoP ")

    async def test_token_without_proof_is_refused(
        self, client: httpx.AsyncClient, acme: AgentClient, dpop_key: DpopKey
    ) -> None:
        token = await dpop_token(client, acme, dpop_key)

        assert_refused(await me_with_dpop(client, token, None), "invalid_dpop_proof")

    @pytest.mark.parametrize("mismatch", ["url", "method", "ath", "key"])
    async def test_proof_that_does_not_match_the_request_is_invalid_dpop_proof(
        self, client: httpx.AsyncClient, acme: AgentClient, dpop_key: DpopKey, mismatch: str
    ) -> None:
        token = await dpop_token(client, acme, dpop_key)
        proofs = {
            "url": lambda: dpop_key.proof("GET", f"{ISSUER}/v1/orgs", token=token),
            "method": lambda: dpop_key.proof("POST", ME_URL, token=token),
            "ath": lambda: dpop_key.proof("GET", ME_URL, token=token + "x"),
            "key": lambda: DpopKey(dpop_key.clock).proof("GET", ME_URL, token=token),
        }

        response = await me_with_dpop(client, token, proofs[mismatch]())

        assert_refused(response, "invalid_dpop_proof")
        assert response.headers["www-authenticate"].startswith("DPoP ")

    async def test_replayed_proof_is_refused(
        self, client: httpx.AsyncClient, acme: AgentClient, dpop_key: DpopKey
    ) -> None:
        token = await dpop_token(client, acme, dpop_key)
        proof = dpop_key.proof("GET", ME_URL, token=token)
        assert (await me_with_dpop(client, token, proof)).status_code == 200

        assert_refused(await me_with_dpop(client, token, proof), "invalid_dpop_proof")


class TestOrgRequiresDpop:
    async def test_token_request_without_proof_is_refused(
        self, client: httpx.AsyncClient, acme: AgentClient, dpop_key: DpopKey
    ) -> None:
        await require_dpop(client)

        response = await request_token(client, acme)

        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_dpop_proof"
        await dpop_token(client, acme, dpop_key)  # with a proof, the org's agents still get tokens

    async def test_existing_bearer_token_is_refused_on_the_api(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)
        assert (await client.get("/v1/me", headers=bearer(token))).status_code == 200

        await require_dpop(client)

        response = await client.get("/v1/me", headers=bearer(token))
        assert_refused(response, "invalid_token")


async def require_dpop(client: httpx.AsyncClient) -> None:
    response = await client.patch(
        "/v1/orgs/acme/token-settings", json={"require_dpop": True}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    assert response.json()["require_dpop"] is True


@dataclass(frozen=True)
class ClientCertificate:
    """A real client certificate, as the proxy forwards it and as RFC 8705 §3.1 hashes it."""

    header: dict[str, str]
    thumbprint: str


def client_certificate(clock: FrozenClock, name: str) -> ClientCertificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(clock.now() - timedelta(minutes=1))
        .not_valid_after(clock.now() + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(Encoding.PEM).decode()
    thumbprint = b64url(hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest())
    return ClientCertificate({CERT_HEADER: quote(pem)}, thumbprint)


@pytest.fixture
def certificate(clock: FrozenClock) -> ClientCertificate:
    return client_certificate(clock, "invoice-bot")


@pytest.fixture
async def untrusted(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The same deployment reached from an address that is not a configured proxy."""
    app = create_app(settings, runtime=runtime)
    transport = httpx.ASGITransport(
        app=app, raise_app_exceptions=False, client=("203.0.113.7", 40000)
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://tabard.test") as http:
        yield http


async def bound_token(
    client: httpx.AsyncClient, agent: AgentClient, certificate: ClientCertificate
) -> str:
    response = await request_token(client, agent, certificate.header)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@pytest.mark.parametrize("overrides", [MTLS], ids=["mtls"])
class TestCertificateBinding:
    async def test_token_carries_the_certificate_thumbprint(
        self, client: httpx.AsyncClient, acme: AgentClient, certificate: ClientCertificate
    ) -> None:
        response = await request_token(client, acme, certificate.header)

        assert response.status_code == 200, response.text
        assert response.json()["token_type"] == "Bearer"
        claims = await decode_with_published_keys(client, response.json()["access_token"])
        assert claims["cnf"] == {"x5t#S256": certificate.thumbprint}

    async def test_api_call_with_the_same_certificate_is_accepted(
        self, client: httpx.AsyncClient, acme: AgentClient, certificate: ClientCertificate
    ) -> None:
        token = await bound_token(client, acme, certificate)

        response = await client.get("/v1/me", headers={**bearer(token), **certificate.header})

        assert response.status_code == 200, response.text
        assert response.json()["id"] == acme.agent["id"]

    async def test_api_call_without_the_certificate_is_refused(
        self, client: httpx.AsyncClient, acme: AgentClient, certificate: ClientCertificate
    ) -> None:
        token = await bound_token(client, acme, certificate)

        assert_refused(await client.get("/v1/me", headers=bearer(token)), "invalid_token")

    async def test_api_call_with_another_certificate_is_refused(
        self,
        client: httpx.AsyncClient,
        acme: AgentClient,
        certificate: ClientCertificate,
        clock: FrozenClock,
    ) -> None:
        token = await bound_token(client, acme, certificate)
        other = client_certificate(clock, "invoice-bot")

        response = await client.get("/v1/me", headers={**bearer(token), **other.header})

        assert_refused(response, "invalid_token")

    async def test_header_from_an_untrusted_address_binds_nothing(
        self,
        client: httpx.AsyncClient,
        untrusted: httpx.AsyncClient,
        acme: AgentClient,
        certificate: ClientCertificate,
    ) -> None:
        response = await request_token(untrusted, acme, certificate.header)

        assert response.status_code == 200, response.text
        claims = await decode_with_published_keys(client, response.json()["access_token"])
        assert "cnf" not in claims

    async def test_header_from_an_untrusted_address_proves_nothing(
        self,
        client: httpx.AsyncClient,
        untrusted: httpx.AsyncClient,
        acme: AgentClient,
        certificate: ClientCertificate,
    ) -> None:
        token = await bound_token(client, acme, certificate)

        response = await untrusted.get("/v1/me", headers={**bearer(token), **certificate.header})

        assert_refused(response, "invalid_token")
