"""private_key_jwt client authentication (RFC 7523 §2.2 and §3) with assertions signed by joserfc,
against keys registered inline (`jwks`) or served by a real HTTP server on loopback (`jwks_uri`).

Every refused assertion is 401 `invalid_client` with `WWW-Authenticate`, and the audit log names
the reason, so each test proves the refusal came from the check it is about.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import httpx
import pytest
import uvicorn
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tabard.core.clock import FrozenClock
from tabard.tokens.client_auth import ASSERTION_MAX_LIFETIME_SECONDS
from tests.conftest import ADMIN, create_agent, create_org
from tests.tokens.oauth_checks import assert_invalid_client, denial_reasons
from tests.tokens.support import ISSUER, TOKEN_URL, decode_with_published_keys

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_ENDPOINT = f"{ISSUER}{TOKEN_URL}"
Key = ECKey | OKPKey | RSAKey


@cache
def client_key(alg: str, number: int = 0) -> Key:
    """Keys made once per module (RSA generation is slow); `number` gives distinct keys."""
    if alg == "ES256":
        return ECKey.generate_key("P-256")
    if alg == "Ed25519":
        return OKPKey.generate_key("Ed25519")
    return RSAKey.generate_key(2048)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class KeyHolder:
    """An agent whose credential is a registered public key; it signs its own assertions."""

    agent_id: str
    client_id: str
    key: Key
    alg: str
    clock: FrozenClock

    def claims(self, omit: Iterable[str] = (), **overrides: Any) -> dict[str, Any]:
        now = int(self.clock.timestamp())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": TOKEN_ENDPOINT,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + 60,
        } | overrides
        return {name: value for name, value in claims.items() if name not in omit}

    def assertion(self, signer: Key | None = None, omit: Iterable[str] = (), **claims: Any) -> str:
        key = signer or self.key
        header = {"alg": self.alg, "kid": key.thumbprint()}
        return jwt.encode(header, self.claims(omit, **claims), key, algorithms=[self.alg])


def form(assertion: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
        **extra,
    }


async def key_holder(
    client: httpx.AsyncClient,
    clock: FrozenClock,
    alg: str = "ES256",
    *,
    jwks_uri: str | None = None,
) -> KeyHolder:
    """An org, an agent and a private_key_jwt credential: inline JWKS, or `jwks_uri` if given."""
    await create_org(client, "acme")
    agent = await create_agent(client, "acme", "signer-bot", capabilities=["invoices.read"])
    key = client_key(alg)
    keys: dict[str, Any] = (
        {"jwks_uri": jwks_uri} if jwks_uri else {"jwks": {"keys": [key.as_dict(private=False)]}}
    )
    response = await client.post(
        f"/v1/orgs/acme/agents/{agent['id']}/credentials",
        json={"name": "key", "auth_method": "private_key_jwt", **keys},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    assert response.json()["client_secret"] is None
    return KeyHolder(agent["id"], response.json()["client_id"], key, alg, clock)


async def assert_token_for(
    client: httpx.AsyncClient, response: httpx.Response, holder: KeyHolder
) -> None:
    assert response.status_code == 200, response.text
    claims = await decode_with_published_keys(client, response.json()["access_token"])
    assert (claims["sub"], claims["client_id"]) == (holder.agent_id, holder.client_id)


async def assert_refused(client: httpx.AsyncClient, response: httpx.Response, reason: str) -> None:
    assert_invalid_client(response)
    assert await denial_reasons(client, "acme") == [reason]


class TestInlineKeys:
    @pytest.mark.parametrize("alg", ["ES256", "RS256", "Ed25519"])
    async def test_assertion_signed_with_the_registered_key_gets_a_token(
        self, client: httpx.AsyncClient, clock: FrozenClock, alg: str
    ) -> None:
        holder = await key_holder(client, clock, alg)
        response = await client.post(TOKEN_URL, data=form(holder.assertion()))
        await assert_token_for(client, response, holder)

    @pytest.mark.parametrize("audience", [TOKEN_ENDPOINT, ISSUER, [ISSUER, "https://other"]])
    async def test_audience_token_endpoint_or_issuer_is_accepted(
        self, client: httpx.AsyncClient, clock: FrozenClock, audience: str | list[str]
    ) -> None:
        holder = await key_holder(client, clock)
        response = await client.post(TOKEN_URL, data=form(holder.assertion(aud=audience)))
        await assert_token_for(client, response, holder)

    async def test_client_id_in_the_body_matching_sub_is_accepted(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        holder = await key_holder(client, clock)
        data = form(holder.assertion(), client_id=holder.client_id)
        await assert_token_for(client, await client.post(TOKEN_URL, data=data), holder)

    async def test_exp_at_the_lifetime_bound_is_accepted(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        holder = await key_holder(client, clock)
        exp = int(clock.timestamp()) + ASSERTION_MAX_LIFETIME_SECONDS
        response = await client.post(TOKEN_URL, data=form(holder.assertion(exp=exp)))
        await assert_token_for(client, response, holder)


class TestRefusedAssertions:
    async def test_wrong_audience(self, client: httpx.AsyncClient, clock: FrozenClock) -> None:
        holder = await key_holder(client, clock)
        assertion = holder.assertion(aud="https://elsewhere.example/oauth2/token")
        response = await client.post(TOKEN_URL, data=form(assertion))
        await assert_refused(client, response, "assertion_audience_mismatch")

    async def test_expired(self, client: httpx.AsyncClient, clock: FrozenClock) -> None:
        holder = await key_holder(client, clock)
        now = int(clock.timestamp())
        assertion = holder.assertion(iat=now - 300, exp=now - 120)
        response = await client.post(TOKEN_URL, data=form(assertion))
        await assert_refused(client, response, "assertion_expired")

    async def test_assertion_used_after_it_expired(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        holder = await key_holder(client, clock)
        assertion = holder.assertion()
        clock.advance(120)
        response = await client.post(TOKEN_URL, data=form(assertion))
        await assert_refused(client, response, "assertion_expired")

    async def test_exp_beyond_the_lifetime_bound(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        holder = await key_holder(client, clock)
        # The bound plus 30 s of clock-skew leeway is the most the endpoint accepts.
        exp = int(clock.timestamp()) + ASSERTION_MAX_LIFETIME_SECONDS + 31
        assertion = holder.assertion(exp=exp)
        response = await client.post(TOKEN_URL, data=form(assertion))
        await assert_refused(client, response, "assertion_lifetime_too_long")

    async def test_issued_in_the_future(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        holder = await key_holder(client, clock)
        now = int(clock.timestamp())
        response = await client.post(TOKEN_URL, data=form(holder.assertion(iat=now + 120)))
        await assert_refused(client, response, "assertion_iat_in_future")

    async def test_missing_exp(self, client: httpx.AsyncClient, clock: FrozenClock) -> None:
        holder = await key_holder(client, clock)
        response = await client.post(TOKEN_URL, data=form(holder.assertion(omit=["exp"])))
        await assert_refused(client, response, "assertion_expired")

    async def test_missing_jti(self, client: httpx.AsyncClient, clock: FrozenClock) -> None:
        holder = await key_holder(client, clock)
        response = await client.post(TOKEN_URL, data=form(holder.assertion(omit=["jti"])))
        await assert_refused(client, response, "assertion_without_jti")

    async def test_replayed_jti_is_refused_on_second_use(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        holder = await key_holder(client, clock)
        assertion = holder.assertion()
        await assert_token_for(client, await client.post(TOKEN_URL, data=form(assertion)), holder)
        response = await client.post(TOKEN_URL, data=form(assertion))
        await assert_refused(client, response, "assertion_replayed")

    async def test_same_jti_in_a_new_assertion_is_refused(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        holder = await key_holder(client, clock)
        first = holder.assertion(jti="once")
        await assert_token_for(client, await client.post(TOKEN_URL, data=form(first)), holder)
        clock.advance(1)
        response = await client.post(TOKEN_URL, data=form(holder.assertion(jti="once")))
        await assert_refused(client, response, "assertion_replayed")

    async def test_issuer_other_than_subject(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        holder = await key_holder(client, clock)
        response = await client.post(TOKEN_URL, data=form(holder.assertion(iss="someone-else")))
        await assert_refused(client, response, "assertion_issuer_mismatch")

    async def test_signed_by_an_unregistered_key(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        holder = await key_holder(client, clock)
        stranger = client_key("ES256", number=1)
        response = await client.post(TOKEN_URL, data=form(holder.assertion(signer=stranger)))
        await assert_refused(client, response, "assertion_signature_invalid")

    async def test_alg_none(self, client: httpx.AsyncClient, clock: FrozenClock) -> None:
        holder = await key_holder(client, clock)
        header = b64url(json.dumps({"alg": "none"}).encode())
        payload = b64url(json.dumps(holder.claims()).encode())
        response = await client.post(TOKEN_URL, data=form(f"{header}.{payload}."))
        await assert_refused(client, response, "assertion_signature_invalid")

    async def test_hs256_keyed_with_the_public_key(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """The algorithm-confusion attack: HMAC keyed with the registered public key's bytes."""
        holder = await key_holder(client, clock)
        header = b64url(json.dumps({"alg": "HS256", "kid": holder.key.thumbprint()}).encode())
        payload = b64url(json.dumps(holder.claims()).encode())
        signing_input = f"{header}.{payload}".encode()
        public = json.dumps(holder.key.as_dict(private=False)).encode()
        signature = b64url(hmac.new(public, signing_input, hashlib.sha256).digest())
        response = await client.post(TOKEN_URL, data=form(f"{header}.{payload}.{signature}"))
        await assert_refused(client, response, "assertion_signature_invalid")

    async def test_not_a_jwt(self, client: httpx.AsyncClient, clock: FrozenClock) -> None:
        await key_holder(client, clock)
        response = await client.post(TOKEN_URL, data=form("not-a-jwt"))
        assert_invalid_client(response)
        assert await denial_reasons(client) == ["assertion_malformed"]

    async def test_subject_without_a_key_credential(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        holder = await key_holder(client, clock)
        assertion = holder.assertion(iss="tbd_cl_nobody", sub="tbd_cl_nobody")
        response = await client.post(TOKEN_URL, data=form(assertion))
        assert_invalid_client(response)
        assert await denial_reasons(client) == ["unknown_client"]

    async def test_wrong_assertion_type_is_invalid_request(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        holder = await key_holder(client, clock)
        data = form(holder.assertion(), client_assertion_type="urn:example:saml")
        response = await client.post(TOKEN_URL, data=data)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_request"


class JWKSServer:
    """A client's key set on a real loopback HTTP server (uvicorn in a thread)."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.status = 200
        self.hits = 0
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}/jwks"
        config = uvicorn.Config(
            Starlette(routes=[Route("/jwks", self._jwks)]),
            lifespan="off",
            ws="none",
            http="h11",
            log_level="warning",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [listener]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "JWKS server did not start"
            time.sleep(0.01)

    def serve(self, *keys: Key, status: int = 200) -> None:
        self.jwks = {"keys": [key.as_dict(private=False) for key in keys]}
        self.status = status
        self.hits = 0

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    async def _jwks(self, request: Request) -> JSONResponse:
        self.hits += 1
        return JSONResponse(self.jwks, status_code=self.status)


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JWKSServer]:
    server = JWKSServer()
    yield server
    server.stop()


class TestJwksUri:
    async def test_assertion_verified_with_keys_fetched_from_the_uri(
        self, client: httpx.AsyncClient, clock: FrozenClock, jwks_server: JWKSServer
    ) -> None:
        jwks_server.serve(client_key("ES256"))
        holder = await key_holder(client, clock, jwks_uri=jwks_server.url)
        response = await client.post(TOKEN_URL, data=form(holder.assertion()))
        await assert_token_for(client, response, holder)
        assert jwks_server.hits == 1

    async def test_served_keys_are_cached_between_requests(
        self, client: httpx.AsyncClient, clock: FrozenClock, jwks_server: JWKSServer
    ) -> None:
        jwks_server.serve(client_key("RS256"))
        holder = await key_holder(client, clock, "RS256", jwks_uri=jwks_server.url)
        for _ in range(2):
            response = await client.post(TOKEN_URL, data=form(holder.assertion()))
            await assert_token_for(client, response, holder)
        assert jwks_server.hits == 1

    async def test_key_missing_from_the_served_set_is_refused(
        self, client: httpx.AsyncClient, clock: FrozenClock, jwks_server: JWKSServer
    ) -> None:
        jwks_server.serve(client_key("ES256", number=1))
        holder = await key_holder(client, clock, jwks_uri=jwks_server.url)
        response = await client.post(TOKEN_URL, data=form(holder.assertion()))
        await assert_refused(client, response, "assertion_signature_invalid")

    async def test_unavailable_uri_is_invalid_client(
        self, client: httpx.AsyncClient, clock: FrozenClock, jwks_server: JWKSServer
    ) -> None:
        jwks_server.serve(client_key("ES256"), status=503)
        holder = await key_holder(client, clock, jwks_uri=jwks_server.url)
        response = await client.post(TOKEN_URL, data=form(holder.assertion()))
        await assert_refused(client, response, "jwks_uri_unavailable")

    async def test_replayed_assertion_is_refused(
        self, client: httpx.AsyncClient, clock: FrozenClock, jwks_server: JWKSServer
    ) -> None:
        jwks_server.serve(client_key("Ed25519"))
        holder = await key_holder(client, clock, "Ed25519", jwks_uri=jwks_server.url)
        assertion = holder.assertion()
        await assert_token_for(client, await client.post(TOKEN_URL, data=form(assertion)), holder)
        response = await client.post(TOKEN_URL, data=form(assertion))
        await assert_refused(client, response, "assertion_replayed")

    async def test_a_key_rotated_at_the_uri_is_fetched_again(
        self, client: httpx.AsyncClient, clock: FrozenClock, jwks_server: JWKSServer
    ) -> None:
        jwks_server.serve(client_key("ES256", number=1))
        holder = await key_holder(client, clock, jwks_uri=jwks_server.url)
        refused = await client.post(TOKEN_URL, data=form(holder.assertion()))
        assert refused.status_code == 401  # the served set does not hold the client's key yet
        jwks_server.serve(client_key("ES256"))  # the client publishes its new key
        clock.advance(6)  # past the refetch interval, well inside the 5-minute cache
        response = await client.post(TOKEN_URL, data=form(holder.assertion()))
        await assert_token_for(client, response, holder)
        assert jwks_server.hits == 1  # one fetch of the new set (serve() restarts the count)
