"""Helpers of the certificate-login tests: agents holding real certificates (issued by Tabard
from a CSR, issued by the org under a CA it uploaded, or self-signed and registered), token
requests that present them the way a TLS-terminating proxy forwards them (RFC 8705 §2) or in
an assertion's `x5c` header (RFC 7523, RFC 7515 §4.1.6), and the checks of a refusal.

Thumbprints and serials are computed here with hashlib and `cryptography`, independently of
Tabard's own helpers.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from joserfc import jwt
from joserfc.jwk import ECKey

from tabard.core.clock import FrozenClock
from tests.conftest import ADMIN, bearer, create_agent, create_org
from tests.pki.support import (
    PrivateKey,
    TestCa,
    generate_ca,
    issue_certificate,
    key_pem,
    proxy_header,
    spiffe_id,
    x5c,
)
from tests.tokens.oauth_checks import token_denials
from tests.tokens.support import ISSUER, TOKEN_URL

TOKEN_ENDPOINT = f"{ISSUER}{TOKEN_URL}"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CAPABILITIES = ["invoices.read", "invoices.write"]
# RFC 6749 §5.2: error_description is limited to %x20-21 / %x23-5B / %x5D-7E.
_DESCRIPTION = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]+")


def thumbprint(certificate: x509.Certificate) -> str:
    """RFC 8705 §3.1 `x5t#S256`: base64url SHA-256 of the DER encoding."""
    digest = hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def serial_hex(certificate: x509.Certificate) -> str:
    return format(certificate.serial_number, "x")


@dataclass(frozen=True)
class CertifiedAgent:
    """An agent and one certificate it logs in with (and the certificate's key)."""

    agent: dict[str, Any]
    certificate: x509.Certificate
    key: PrivateKey
    # What follows the leaf in the forwarded chain (intermediates the client sends).
    chain: tuple[x509.Certificate, ...] = ()
    # Tabard's row of the certificate (issued or registered), when there is one.
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        agent_id: str = self.agent["id"]
        return agent_id

    @property
    def spiffe_id(self) -> str:
        return spiffe_id(self.agent["org_id"], self.agent["name"])

    @property
    def header(self) -> dict[str, str]:
        return proxy_header(self.certificate, *self.chain)

    @property
    def thumbprint(self) -> str:
        return thumbprint(self.certificate)

    @property
    def serial(self) -> str:
        return serial_hex(self.certificate)

    def with_certificate(
        self,
        certificate: x509.Certificate,
        key: PrivateKey,
        chain: tuple[x509.Certificate, ...] = (),
        record: dict[str, Any] | None = None,
    ) -> CertifiedAgent:
        return CertifiedAgent(self.agent, certificate, key, chain, record or {})


async def issued_agent(
    client: httpx.AsyncClient, org_id: str = "acme", name: str = "invoice-bot"
) -> CertifiedAgent:
    """A new agent of `org_id` with a certificate Tabard issued from its CSR."""
    agent = await create_agent(client, org_id, name, capabilities=CAPABILITIES)
    record, certificate, key = await issue_certificate(client, org_id, agent["id"])
    return CertifiedAgent(agent, certificate, key, record=record)


async def acme_bot(client: httpx.AsyncClient) -> CertifiedAgent:
    """Org `acme` with a CA Tabard generated, and agent `invoice-bot` holding a certificate it
    issued (not used yet, so not pinned)."""
    await create_org(client, "acme")
    await tabard_ca(client, "acme")
    return await issued_agent(client, "acme", "invoice-bot")


async def another_certificate(client: httpx.AsyncClient, holder: CertifiedAgent) -> CertifiedAgent:
    """The same agent with a second certificate Tabard issued."""
    record, certificate, key = await issue_certificate(client, holder.agent["org_id"], holder.id)
    return holder.with_certificate(certificate, key, record=record)


async def tabard_ca(client: httpx.AsyncClient, org_id: str = "acme") -> dict[str, Any]:
    """A CA Tabard generates for the org (it holds the key and issues from CSRs)."""
    return await generate_ca(client, org_id)


async def upload_ca(
    client: httpx.AsyncClient, org_id: str, root: TestCa, *intermediates: TestCa
) -> dict[str, Any]:
    """Upload the org's own CA: the root, with its intermediates (issuing CA first)."""
    body: dict[str, Any] = {"source": "upload", "certificate_pem": root.pem}
    if intermediates:
        body["intermediates_pem"] = "".join(ca.pem for ca in intermediates)
    response = await client.post(f"/v1/orgs/{org_id}/cas", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    ca: dict[str, Any] = response.json()
    return ca


async def register_certificate(
    client: httpx.AsyncClient, agent: dict[str, Any], certificate: x509.Certificate
) -> dict[str, Any]:
    """Register a certificate the org made (self-signed, or under its CA) for `agent`."""
    response = await client.post(
        f"/v1/orgs/{agent['org_id']}/agents/{agent['id']}/certificates",
        json={"certificate_pem": certificate.public_bytes(Encoding.PEM).decode()},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    record: dict[str, Any] = response.json()
    return record


async def revoke_certificate(
    client: httpx.AsyncClient, org_id: str = "acme", **body: str
) -> dict[str, Any]:
    """Revoke by `ca_id` and `serial`, or by `certificate_id` (201 asserted)."""
    response = await client.post(
        f"/v1/orgs/{org_id}/certificate-revocations", json=body, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    revocation: dict[str, Any] = response.json()
    return revocation


async def login(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    client_id: str | None = None,
    **form: str | list[str],
) -> httpx.Response:
    """A client_credentials request whose only credential is the forwarded certificate."""
    data: dict[str, str | list[str]] = {"grant_type": "client_credentials", **form}
    if client_id is not None:
        data["client_id"] = client_id
    return await client.post(TOKEN_URL, data=data, headers=headers)


async def holder_login(
    client: httpx.AsyncClient, holder: CertifiedAgent, **form: str | list[str]
) -> httpx.Response:
    """`holder` logs in with its certificate, naming itself by its SPIFFE ID (RFC 8705 §2)."""
    return await login(client, holder.header, holder.spiffe_id, **form)


async def certificate_token(
    client: httpx.AsyncClient, holder: CertifiedAgent, **form: str | list[str]
) -> str:
    response = await holder_login(client, holder, **form)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def me(
    client: httpx.AsyncClient, token: str, certificate_header: dict[str, str] | None = None
) -> httpx.Response:
    return await client.get("/v1/me", headers={**bearer(token), **(certificate_header or {})})


async def introspected(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    response = await client.post("/oauth2/introspect", data={"token": token}, headers=ADMIN)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def assert_refused(
    client: httpx.AsyncClient,
    response: httpx.Response,
    code: str,
    description: str | None = None,
    *,
    org_id: str | None = "acme",
) -> str:
    """401 `invalid_client` (RFC 6749 §5.2) naming the stable `code`, audited as `token.denied`
    with that reason on `org_id`'s log (None: the platform's, no org being known)."""
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["www-authenticate"].startswith("Basic realm=")
    body = response.json()
    assert set(body) == {"error", "error_description", "code"}, body
    assert (body["error"], body["code"]) == ("invalid_client", code), body
    assert _DESCRIPTION.fullmatch(body["error_description"]), body
    if description is not None:
        assert body["error_description"] == description, body
    events = await token_denials(client, org_id)
    assert [(e["org_id"], e["details"]["reason"]) for e in events] == [(org_id, code)], events
    text: str = body["error_description"]
    return text


@dataclass(frozen=True)
class X5cSigner:
    """Signs RFC 7523 client assertions with a certificate's key, carrying the certificate in
    the JWS `x5c` header (leaf first)."""

    holder: CertifiedAgent
    clock: FrozenClock

    def assertion(
        self,
        *,
        chain: tuple[x509.Certificate, ...] | None = None,
        signer: PrivateKey | None = None,
        x5c_value: Any = None,
        **claims: Any,
    ) -> str:
        key = ECKey.import_key(key_pem(signer or self.holder.key))
        certificates = (self.holder.certificate, *self.holder.chain) if chain is None else chain
        header = {"alg": "ES256", "x5c": x5c(*certificates) if x5c_value is None else x5c_value}
        now = int(self.clock.timestamp())
        payload = {
            "iss": self.holder.spiffe_id,
            "sub": self.holder.spiffe_id,
            "aud": TOKEN_ENDPOINT,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + 60,
            **claims,
        }
        return jwt.encode(header, payload, key, algorithms=["ES256"])


async def assertion_login(client: httpx.AsyncClient, assertion: str) -> httpx.Response:
    """private_key_jwt (RFC 7523 §2.2) and nothing else: no client certificate is forwarded."""
    data = {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
    }
    return await client.post(TOKEN_URL, data=data)
