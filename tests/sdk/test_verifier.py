"""The SDK's access-token verifier: tokens made independently with joserfc, refusals, JWKS caching.

`TokenVerifier` runs against a real HTTP server on loopback (uvicorn in a thread) that serves the
issuer's metadata and a JWKS the tests can swap, fail or give cache headers, and counts requests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tabard.core.clock import FrozenClock
from tabard.sdk import KeySet, KeySetUnavailable, TokenInvalid, TokenVerifier, UnknownKeyId
from tabard.sdk import verify_jwt as sdk_verify_jwt
from tabard.sdk.verifier import freshness_lifetime, metadata_url

ISSUER = "https://tabard.example"
AUDIENCE = "https://api.example"
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
EC, OKP, RSA = (
    ECKey.generate_key("P-256"),
    OKPKey.generate_key("Ed25519"),
    RSAKey.generate_key(2048),
)
KEY_FOR_ALG: dict[str, Any] = {"ES256": EC, "Ed25519": OKP, "EdDSA": OKP, "RS256": RSA}


def public_jwk(key: Any, alg: str | None = None, **members: Any) -> dict[str, Any]:
    jwk = {**key.as_dict(private=False), "kid": key.thumbprint(), "use": "sig", **members}
    return jwk | ({"alg": alg} if alg else {})


JWKS = {"keys": [public_jwk(EC, "ES256"), public_jwk(OKP, "Ed25519"), public_jwk(RSA, "RS256")]}
KEYS = KeySet.from_jwks(JWKS)


def claims(now: float = NOW, **changes: Any) -> dict[str, Any]:
    """RFC 9068 claims; a change to None removes the claim."""
    base = {
        "iss": ISSUER, "sub": "agent-1", "aud": AUDIENCE, "client_id": "tbd_client_1",
        "scope": "agents:read", "jti": "jti-1", "iat": int(now), "exp": int(now) + 900,
    }  # fmt: skip
    return {k: v for k, v in (base | changes).items() if v is not None}


def sign(
    alg: str = "ES256", body: dict[str, Any] | None = None, key: Any = None, **header: Any
) -> str:
    """A token signed by joserfc (not by the code under test)."""
    key = key or KEY_FOR_ALG[alg]
    protected = {"alg": alg, "typ": "at+jwt", "kid": key.thumbprint()} | header
    protected = {k: v for k, v in protected.items() if v is not None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # joserfc flags the legacy "EdDSA" name
        return jwt.encode(protected, body or claims(), key, [alg], default_type=None)


def b64(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def verify(token: str, keys: KeySet = KEYS, **options: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "now": NOW}
    return sdk_verify_jwt(token, keys, **(defaults | options))


def refused(token: str, reason: str, keys: KeySet = KEYS, **options: Any) -> TokenInvalid:
    with pytest.raises(TokenInvalid) as raised:
        verify(token, keys, **options)
    assert raised.value.reason == reason, str(raised.value)
    return raised.value


class TestVerifyJwtAccepts:
    @pytest.mark.parametrize("alg", ["ES256", "Ed25519", "EdDSA", "RS256"])
    def test_token_of_each_algorithm_verifies(self, alg: str) -> None:
        assert verify(sign(alg)) == claims()

    @pytest.mark.parametrize(
        "typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+Jwt"]
    )
    def test_typ_is_compared_as_a_media_type(self, typ: str) -> None:
        assert verify(sign(typ=typ))["sub"] == "agent-1"

    def test_audience_may_be_one_of_a_list(self) -> None:
        assert verify(sign(body=claims(aud=["https://other.example", AUDIENCE])))

    def test_no_audience_check_when_none_is_asked(self) -> None:
        assert verify(sign(body=claims(aud="https://other.example")), audience=None)

    def test_no_typ_check_when_none_is_asked(self) -> None:
        assert verify(sign(typ="JWT"), typ=None)

    def test_key_without_alg_verifies_what_its_type_fits(self) -> None:
        keys = KeySet.from_jwks({"keys": [public_jwk(EC)]})
        assert verify(sign("ES256"), keys)

    def test_one_kid_may_name_keys_of_different_types(self) -> None:
        keys = KeySet.from_jwks({"keys": [public_jwk(EC, kid="k"), public_jwk(RSA, kid="k")]})
        assert verify(sign("ES256", kid="k"), keys)
        assert verify(sign("RS256", kid="k"), keys)


class TestVerifyJwtRefusesAlgorithms:
    def test_alg_none_is_refused(self) -> None:
        unsigned = (
            f"{b64({'alg': 'none', 'typ': 'at+jwt', 'kid': EC.thumbprint()})}.{b64(claims())}"
        )
        refused(unsigned + ".", "malformed")
        refused(unsigned + ".c2ln", "unsupported_alg")

    @pytest.mark.parametrize("algorithms", [None, frozenset({"HS256", "RS256"})])
    def test_hs256_keyed_with_the_rsa_public_key_is_refused(self, algorithms: Any) -> None:
        signing_input = f"{b64({'alg': 'HS256', 'typ': 'at+jwt', 'kid': RSA.thumbprint()})}." + b64(
            claims()
        )
        secret = RSA.as_pem(private=False)
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        options = {"algorithms": algorithms} if algorithms else {}
        refused(f"{signing_input}.{b64(mac)}", "unsupported_alg", **options)

    def test_alg_outside_the_allow_list_is_refused(self) -> None:
        refused(sign("RS256"), "unsupported_alg", algorithms=frozenset({"ES256"}))

    def test_rsa_token_naming_an_ec_key_is_refused(self) -> None:
        refused(sign("RS256", kid=EC.thumbprint()), "unsupported_alg")

    def test_es256_token_naming_an_ed25519_key_is_refused(self) -> None:
        refused(sign("ES256", kid=OKP.thumbprint()), "unsupported_alg")

    def test_key_whose_alg_contradicts_its_type_is_never_used(self) -> None:
        keys = KeySet.from_jwks({"keys": [public_jwk(EC, "RS256")]})
        assert len(keys) == 0
        refused(sign("ES256"), "unknown_kid", keys)


class TestVerifyJwtRefusesKeys:
    @pytest.mark.parametrize("parameter", ["jwk", "jku", "x5u", "x5c"])
    def test_key_carried_by_the_token_is_refused(self, parameter: str) -> None:
        attacker = ECKey.generate_key("P-256")
        values: dict[str, Any] = {
            "jwk": public_jwk(attacker),
            "jku": "https://attacker.example/jwks",
            "x5u": "https://attacker.example/cert.pem",
            "x5c": ["MIIBszCCAVmgAwIBAgIUBA=="],
        }
        for kid in (attacker.thumbprint(), EC.thumbprint()):
            token = sign("ES256", key=attacker, kid=kid, **{parameter: values[parameter]})
            assert parameter in str(refused(token, "malformed"))

    def test_unknown_kid_is_its_own_error(self) -> None:
        stranger = ECKey.generate_key("P-256")
        with pytest.raises(UnknownKeyId) as raised:
            verify(sign("ES256", key=stranger))
        assert (raised.value.reason, raised.value.kid) == ("unknown_kid", stranger.thumbprint())

    def test_key_outside_the_jwks_with_a_known_kid_fails_the_signature(self) -> None:
        stranger = ECKey.generate_key("P-256")
        error = refused(sign("ES256", key=stranger, kid=EC.thumbprint()), "bad_signature")
        assert str(error) == "token signature is invalid"

    def test_token_without_kid_is_refused(self) -> None:
        refused(sign("ES256", kid=None), "malformed")

    def test_critical_extensions_are_refused(self) -> None:
        refused(sign("ES256", crit=["kid"]), "malformed")


class TestVerifyJwtRefusesTampering:
    @pytest.mark.parametrize("alg", ["ES256", "Ed25519", "RS256"])
    def test_tampered_payload(self, alg: str) -> None:
        header, _, signature = sign(alg).split(".")
        forged = f"{header}.{b64(claims(scope='admin'))}.{signature}"
        assert str(refused(forged, "bad_signature")) == "token signature is invalid"

    @pytest.mark.parametrize("alg", ["ES256", "Ed25519", "RS256"])
    def test_tampered_signature(self, alg: str) -> None:
        signing_input, _, signature = sign(alg).rpartition(".")
        raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
        raw[len(raw) // 2] ^= 1
        refused(f"{signing_input}.{b64(bytes(raw))}", "bad_signature")
        refused(f"{signing_input}.{b64(bytes(raw[:-1]))}", "bad_signature")

    def test_es256_signature_is_exactly_64_bytes(self) -> None:
        signing_input, _, signature = sign("ES256").rpartition(".")
        raw = base64.urlsafe_b64decode(signature + "==")
        padded = raw[:32] + b"\x00" + raw[32:]  # the same r and s, encoded longer
        refused(f"{signing_input}.{b64(padded)}", "bad_signature")

    @pytest.mark.parametrize(
        "token",
        [
            "",
            "a.b",
            "a.b.c.d.e",
            sign() + "=",
            sign().replace(".", "+", 1),
            f"{b64(b'not json')}.{b64(claims())}.c2ln",
            f"{b64(b'[1]')}.{b64(claims())}.c2ln",
            f"{b64(b'[' * 5000)}.{b64(claims())}.c2ln",
            f"{b64({'alg': 'ES256', 'kid': 'k'})}.{'A' * 16384}.c2ln",
        ],
        ids=["empty", "two", "five", "pad", "plus", "json", "array", "deep", "long"],
    )
    def test_malformed(self, token: str) -> None:
        refused(token, "malformed")

    @pytest.mark.parametrize("exp", [float("nan"), "9999999999", True])
    def test_exp_that_is_not_a_number(self, exp: Any) -> None:
        refused(sign(body=claims(exp=exp)), "malformed")


class TestVerifyJwtClaims:
    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            (claims(iss="https://evil.example"), "wrong_issuer"),
            (claims(iss=None), "missing_claim"),
            (claims(aud="https://other.example"), "wrong_audience"),
            (claims(aud=["https://other.example"]), "wrong_audience"),
            (claims(aud=None), "missing_claim"),
            (claims(exp=None), "missing_claim"),
            (claims(exp=NOW - 31), "expired"),
            (claims(nbf=NOW + 31), "not_yet_valid"),
            (claims(iat=NOW + 31), "not_yet_valid"),
        ],
        ids=["iss", "no-iss", "aud", "aud-list", "no-aud", "no-exp", "exp", "nbf", "iat"],
    )
    def test_refusal(self, body: dict[str, Any], reason: str) -> None:
        refused(sign(body=body), reason)

    @pytest.mark.parametrize("typ", ["JWT", "application/jwt", "at+jwt2", None])
    def test_wrong_or_missing_typ(self, typ: str | None) -> None:
        refused(sign(typ=typ), "wrong_type")

    def test_leeway_boundary_for_exp(self) -> None:
        token = sign(body=claims(exp=NOW))
        assert verify(token, now=NOW + 29.999)
        refused(token, "expired", now=NOW + 30)
        refused(token, "expired", now=NOW + 1, leeway_seconds=0)

    def test_leeway_boundary_for_nbf(self) -> None:
        token = sign(body=claims(nbf=NOW + 30))
        assert verify(token)
        refused(token, "not_yet_valid", now=NOW - 0.001)


def weak_rsa_jwk() -> dict[str, Any]:
    weak = rsa.generate_private_key(65537, 1024)  # noqa: S505 - the weakness is the point
    numbers = weak.public_key().public_numbers()
    n, e = numbers.n.to_bytes(128), numbers.e.to_bytes(3)
    return {"kty": "RSA", "n": b64(n), "e": b64(e), "kid": "weak", "alg": "RS256"}


class TestKeySet:
    def test_unusable_keys_are_skipped_and_the_others_kept(self) -> None:
        off_curve = public_jwk(EC, kid="off") | {"y": public_jwk(EC)["x"]}
        jwks = {
            "keys": [
                public_jwk(EC, "ES256"),
                public_jwk(ECKey.generate_key("P-256"), use="enc"),
                public_jwk(ECKey.generate_key("P-256"), key_ops=["encrypt"]),
                public_jwk(ECKey.generate_key("P-384")),
                public_jwk(OKPKey.generate_key("Ed448")),
                weak_rsa_jwk(),
                {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
                {k: v for k, v in public_jwk(RSA).items() if k != "kid"},
                off_curve,
                "not a key",
            ]
        }
        keys = KeySet.from_jwks(jwks)
        assert keys.kids == {EC.thumbprint()}
        expected = ["use is 'enc'", "key_ops", "P-384", "Ed448", "shorter than 2048 bits", "'oct'"]
        expected += ["no kid", "not on the curve", "not a JSON object"]
        for fragment, reason in zip(expected, keys.skipped, strict=True):
            assert fragment in reason
        assert verify(sign("ES256"), keys)

    @pytest.mark.parametrize("document", [{}, {"keys": {}}, []])
    def test_a_document_that_is_not_a_jwk_set_is_an_error(self, document: Any) -> None:
        with pytest.raises(ValueError, match="keys"):
            KeySet.from_jwks(document)


class TestHttpHelpers:
    def test_metadata_url_inserts_the_well_known_suffix_before_the_path(self) -> None:
        assert metadata_url("https://as.example/") == (
            "https://as.example/.well-known/oauth-authorization-server"
        )
        assert metadata_url("https://as.example/tenant/1") == (
            "https://as.example/.well-known/oauth-authorization-server/tenant/1"
        )

    @pytest.mark.parametrize(
        ("headers", "lifetime"),
        [
            ({}, 300),
            ({"Cache-Control": "public, max-age=60"}, 60),
            ({"Cache-Control": "max-age=3600"}, 300),
            ({"Cache-Control": "max-age=60", "Age": "50"}, 10),
            ({"Cache-Control": "no-store"}, 0),
            ({"Cache-Control": "max-age=soon"}, 0),
        ],
    )
    def test_freshness_lifetime(self, headers: dict[str, str], lifetime: float) -> None:
        assert freshness_lifetime(httpx.Headers(headers), 300) == lifetime


class JWKSServer:
    """An issuer on loopback: RFC 8414 metadata and a JWKS whose content, status and
    Cache-Control the test sets; `hits` counts requests per path."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.reset()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        routes = [
            Route("/.well-known/oauth-authorization-server", self._metadata),
            Route("/jwks", self._jwks),
        ]
        config = uvicorn.Config(
            Starlette(routes=routes), lifespan="off", ws="none", http="h11", log_level="warning"
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

    def reset(self) -> None:
        self.jwks: dict[str, Any] = {"keys": [public_jwk(EC, "ES256")]}
        self.status = 200
        self.cache_control: str | None = None
        self.hits.clear()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    async def _metadata(self, request: Request) -> JSONResponse:
        self.hits["metadata"] += 1
        return JSONResponse({"issuer": self.url, "jwks_uri": f"{self.url}/jwks"})

    async def _jwks(self, request: Request) -> JSONResponse:
        self.hits["jwks"] += 1
        headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
        return JSONResponse(self.jwks, status_code=self.status, headers=headers)


@pytest.fixture(scope="module")
def issuer_server() -> Iterator[JWKSServer]:
    server = JWKSServer()
    yield server
    server.stop()


@pytest.fixture
def issuer(issuer_server: JWKSServer) -> JWKSServer:
    issuer_server.reset()
    return issuer_server


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


def issued(issuer: JWKSServer, clock: FrozenClock, key: Any = EC, **header: Any) -> str:
    body = claims(now=clock.timestamp(), iss=issuer.url)
    return sign("ES256", body, key=key, **header)


def verifier_for(issuer: JWKSServer, clock: FrozenClock, **options: Any) -> TokenVerifier:
    return TokenVerifier(issuer.url, audience=AUDIENCE, clock=clock.timestamp, **options)


class TestTokenVerifier:
    async def test_fetches_metadata_and_jwks_lazily_then_caches(
        self, issuer: JWKSServer, clock: FrozenClock
    ) -> None:
        async with verifier_for(issuer, clock) as verifier:
            assert issuer.hits == {}
            for _ in range(3):
                assert (await verifier.verify(issued(issuer, clock)))["sub"] == "agent-1"
        assert issuer.hits == {"metadata": 1, "jwks": 1}

    async def test_configured_jwks_uri_skips_discovery(
        self, issuer: JWKSServer, clock: FrozenClock
    ) -> None:
        async with verifier_for(issuer, clock, jwks_uri=f"{issuer.url}/jwks") as verifier:
            await verifier.verify(issued(issuer, clock))
        assert issuer.hits == {"jwks": 1}

    async def test_concurrent_first_calls_fetch_once(
        self, issuer: JWKSServer, clock: FrozenClock
    ) -> None:
        async with verifier_for(issuer, clock) as verifier:
            await asyncio.gather(*(verifier.verify(issued(issuer, clock)) for _ in range(20)))
        assert issuer.hits["jwks"] == 1

    async def test_rotated_key_verifies_after_one_refresh(
        self, issuer: JWKSServer, clock: FrozenClock
    ) -> None:
        async with verifier_for(issuer, clock) as verifier:
            await verifier.verify(issued(issuer, clock))
            successor = ECKey.generate_key("P-256")
            issuer.jwks = {"keys": [public_jwk(EC, "ES256"), public_jwk(successor, "ES256")]}
            clock.advance(10)
            assert await verifier.verify(issued(issuer, clock, key=successor))
            assert await verifier.verify(issued(issuer, clock))
        assert issuer.hits["jwks"] == 2

    async def test_unknown_kid_refreshes_at_most_once_per_interval(
        self, issuer: JWKSServer, clock: FrozenClock
    ) -> None:
        async with verifier_for(issuer, clock) as verifier:
            await verifier.verify(issued(issuer, clock))
            clock.advance(10)
            for n in range(50):
                with pytest.raises(UnknownKeyId):
                    await verifier.verify(issued(issuer, clock, kid=f"bogus-{n}"))
            assert issuer.hits["jwks"] == 2
            clock.advance(9)
            with pytest.raises(UnknownKeyId):
                await verifier.verify(issued(issuer, clock, kid="bogus"))
            assert issuer.hits["jwks"] == 2
            clock.advance(1)
            with pytest.raises(UnknownKeyId):
                await verifier.verify(issued(issuer, clock, kid="bogus"))
        assert issuer.hits["jwks"] == 3

    async def test_cache_control_max_age_is_honoured(
        self, issuer: JWKSServer, clock: FrozenClock
    ) -> None:
        issuer.cache_control = "public, max-age=60"
        async with verifier_for(issuer, clock) as verifier:
            await verifier.verify(issued(issuer, clock))
            clock.advance(59)
            await verifier.verify(issued(issuer, clock))
            assert issuer.hits["jwks"] == 1
            clock.advance(1)
            await verifier.verify(issued(issuer, clock))
        assert issuer.hits["jwks"] == 2

    async def test_cache_seconds_bounds_a_longer_max_age(
        self, issuer: JWKSServer, clock: FrozenClock
    ) -> None:
        issuer.cache_control = "max-age=86400"
        async with verifier_for(issuer, clock, cache_seconds=120) as verifier:
            await verifier.verify(issued(issuer, clock))
            clock.advance(120)
            await verifier.verify(issued(issuer, clock))
        assert issuer.hits["jwks"] == 2

    async def test_removed_key_is_refused_once_the_cache_expires(
        self, issuer: JWKSServer, clock: FrozenClock
    ) -> None:
        async with verifier_for(issuer, clock) as verifier:
            await verifier.verify(issued(issuer, clock))
            issuer.jwks = {"keys": [public_jwk(OKP, "Ed25519")]}
            clock.advance(300)
            with pytest.raises(UnknownKeyId):
                await verifier.verify(issued(issuer, clock))

    async def test_outage_keeps_the_cached_keys(
        self, issuer: JWKSServer, clock: FrozenClock
    ) -> None:
        async with verifier_for(issuer, clock) as verifier:
            await verifier.verify(issued(issuer, clock))
            issuer.status = 503
            clock.advance(300)
            assert await verifier.verify(issued(issuer, clock))
            assert await verifier.verify(issued(issuer, clock))
        assert issuer.hits["jwks"] == 2

    async def test_unreachable_keys_are_unavailable_not_invalid(
        self, issuer: JWKSServer, clock: FrozenClock
    ) -> None:
        issuer.status = 500
        async with verifier_for(issuer, clock) as verifier:
            for _ in range(3):
                with pytest.raises(KeySetUnavailable):
                    await verifier.verify(issued(issuer, clock))
            assert issuer.hits["jwks"] == 1
            issuer.status = 200
            clock.advance(10)
            assert await verifier.verify(issued(issuer, clock))

    async def test_metadata_of_another_issuer_is_refused(
        self, issuer: JWKSServer, clock: FrozenClock
    ) -> None:
        verifier = TokenVerifier(f"{issuer.url}/", clock=clock.timestamp)
        async with verifier:
            with pytest.raises(KeySetUnavailable, match="another issuer"):
                await verifier.verify(issued(issuer, clock))
        assert issuer.hits == {"metadata": 1}
