"""DPoP proof verification (RFC 9449) against proofs built independently with joserfc and PyJWT.

Every case runs on the memory store and on Redis; two verifiers over one Redis namespace stand for
two replicas (for the memory store, one process has one store, so both share it).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache
from typing import Any

import jwt
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from joserfc import jws
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey, import_key

from tabard.core.clock import FrozenClock, SystemClock
from tabard.core.kv import KeyValueStore, create_kv
from tabard.tokens.dpop import (
    DpopVerifier,
    InvalidDpopProof,
    UseDpopNonce,
    ath_for,
    jwk_thumbprint,
)

SECRET = b"dpop-test-secret-0123456789abcdef"
URL = "https://tabard.example/oauth2/token"
ACCESS_TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJl"
Key = ECKey | OKPKey | RSAKey


@cache
def _key(alg: str) -> Key:
    """One key per algorithm for the module (RSA generation is slow)."""
    if alg.startswith("ES"):
        return ECKey.generate_key({"ES256": "P-256", "ES384": "P-384"}[alg])
    if alg in ("Ed25519", "EdDSA"):
        return OKPKey.generate_key("Ed25519")
    return RSAKey.generate_key(2048)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Client:
    """A DPoP client that signs its proofs with joserfc."""

    key: Key
    alg: str
    clock: FrozenClock

    def proof(
        self,
        *,
        htm: str = "POST",
        htu: str = URL,
        header: dict[str, Any] | None = None,
        omit: Iterable[str] = (),
        signer: Key | OctKey | None = None,
        **claims: Any,
    ) -> str:
        protected = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.key.as_dict(private=False)}
        payload = {"jti": uuid.uuid4().hex, "htm": htm, "htu": htu, "iat": self.iat()} | claims
        protected |= header or {}
        for name in omit:
            protected.pop(name, None)
            payload.pop(name, None)
        key = signer or self.key
        # joserfc warns on the pre-RFC 9864 name, which these tests use on purpose.
        legacy = self.alg == "EdDSA"
        with pytest.warns(SecurityWarning, match="EdDSA") if legacy else nullcontext():
            return jws.serialize_compact(protected, json.dumps(payload), key, algorithms=[self.alg])

    def iat(self) -> int:
        return int(self.clock.timestamp())

    @property
    def jkt(self) -> str:
        return self.key.thumbprint()


@dataclass
class Stores:
    store: KeyValueStore
    replica: Callable[[], KeyValueStore]  # another connection to the same data


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def kv(request: pytest.FixtureRequest, clock: FrozenClock) -> AsyncIterator[Stores]:
    if request.param == "memory":
        memory = create_kv("memory", "", clock)
        yield Stores(memory, lambda: memory)
        await memory.close()
        return
    url = f"{request.getfixturevalue('redis_url')}?socket_timeout=10&socket_connect_timeout=10"
    namespace = f"test-dpop-{uuid.uuid4().hex}"
    opened: list[KeyValueStore] = []

    def connect() -> KeyValueStore:
        opened.append(create_kv("redis", url, clock, namespace=namespace))
        return opened[-1]

    yield Stores(connect(), connect)
    for store in opened:
        await store.close()
    client = aioredis.Redis.from_url(url)
    keys = [key async for key in client.scan_iter(match=f"{namespace}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def clock() -> FrozenClock:
    """Now, on a whole second, so an integer `iat` can sit exactly on the window's edges."""
    return FrozenClock(SystemClock().now().replace(microsecond=0))


@pytest.fixture
def verifier(kv: Stores, clock: FrozenClock) -> DpopVerifier:
    return DpopVerifier(kv.store, SECRET, clock)


@pytest.fixture
def client(clock: FrozenClock) -> Client:
    return Client(_key("ES256"), "ES256", clock)


async def refused(verifier: DpopVerifier, proof: str | None, match: str, **request: Any) -> None:
    with pytest.raises(InvalidDpopProof, match=match) as caught:
        await verifier.verify(proof, **({"method": "POST", "url": URL} | request))
    assert caught.value.error == "invalid_dpop_proof"


class TestVerifyAccepts:
    @pytest.mark.parametrize("alg", ["ES256", "ES384", "Ed25519", "EdDSA", "RS256", "PS256"])
    async def test_valid_proof_yields_the_key_thumbprint(
        self, verifier: DpopVerifier, clock: FrozenClock, alg: str
    ) -> None:
        client = Client(_key(alg), alg, clock)
        proof = client.proof(jti="jti-1")
        accepted = await verifier.verify(proof, method="POST", url=URL)
        assert accepted.jkt == client.jkt
        assert accepted.jti == "jti-1"
        assert accepted.public_jwk == client.key.as_dict(private=False)

    @pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
    async def test_proof_signed_with_pyjwt_is_accepted(
        self, verifier: DpopVerifier, clock: FrozenClock, alg: str
    ) -> None:
        if alg == "ES256":
            private: Any = ec.generate_private_key(ec.SECP256R1())
            public_jwk = jwt.algorithms.ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
        else:
            private = ed25519.Ed25519PrivateKey.generate()
            public_jwk = jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
        claims = {"jti": "pyjwt", "htm": "GET", "htu": URL, "iat": int(clock.timestamp())}
        claims["ath"] = ath_for(ACCESS_TOKEN)
        headers = {"typ": "dpop+jwt", "jwk": public_jwk}
        proof = jwt.encode(claims, private, algorithm=alg, headers=headers)
        accepted = await verifier.verify(proof, method="GET", url=URL, access_token=ACCESS_TOKEN)
        assert accepted.jkt == import_key(public_jwk).thumbprint()

    @pytest.mark.parametrize(
        ("htu", "url"),
        [
            (URL, f"{URL}?grant_type=client_credentials#part"),
            (f"{URL}?a=1#fragment", URL),
            ("HTTPS://Tabard.EXAMPLE/oauth2/token", URL),
            ("https://tabard.example:443/oauth2/token", URL),
            ("http://tabard.example:80/oauth2/token", "http://tabard.example/oauth2/token"),
            ("https://tabard.example/oauth2/%74oken", URL),
            ("https://tabard.example/a%2fb", "https://tabard.example/a%2Fb"),
            ("https://tabard.example/oauth2/./x/../token", URL),
            ("https://tabard.example", "https://tabard.example/"),
            ("https://[::1]:8443/token", "https://[::1]:8443/token?x"),
        ],
    )
    async def test_htu_is_compared_after_normalisation(
        self, verifier: DpopVerifier, client: Client, htu: str, url: str
    ) -> None:
        accepted = await verifier.verify(client.proof(htu=htu), method="POST", url=url)
        assert accepted.jkt == client.jkt

    async def test_matching_ath_and_expected_jkt_are_accepted(
        self, verifier: DpopVerifier, client: Client
    ) -> None:
        proof = client.proof(htm="GET", ath=ath_for(ACCESS_TOKEN))
        accepted = await verifier.verify(
            proof, method="GET", url=URL, access_token=ACCESS_TOKEN, expected_jkt=client.jkt
        )
        assert accepted.jkt == client.jkt

    @pytest.mark.parametrize("offset", [-60, 5])
    async def test_iat_at_the_edges_of_the_window_is_accepted(
        self, verifier: DpopVerifier, client: Client, offset: int
    ) -> None:
        await verifier.verify(client.proof(iat=client.iat() + offset), method="POST", url=URL)

    async def test_same_jti_under_two_keys_is_not_a_replay(
        self, verifier: DpopVerifier, client: Client, clock: FrozenClock
    ) -> None:
        other = Client(_key("Ed25519"), "Ed25519", clock)
        await verifier.verify(client.proof(jti="shared"), method="POST", url=URL)
        await verifier.verify(other.proof(jti="shared"), method="POST", url=URL)


class TestVerifyRefusesRequestMismatch:
    @pytest.mark.parametrize(
        "htu",
        [
            "https://tabard.example/oauth2/introspect",
            "https://tabard.example/OAuth2/token",
            "https://tabard.example:8443/oauth2/token",
            "http://tabard.example/oauth2/token",
            "https://other.example/oauth2/token",
            "https://tabard.example/oauth2%2Ftoken",
        ],
    )
    async def test_wrong_htu(self, verifier: DpopVerifier, client: Client, htu: str) -> None:
        await refused(verifier, client.proof(htu=htu), "htu does not match")

    @pytest.mark.parametrize(
        "htu", ["/oauth2/token", "ftp://tabard.example/x", "https://u@tabard.example/oauth2/token"]
    )
    async def test_htu_that_is_not_an_absolute_http_uri(
        self, verifier: DpopVerifier, client: Client, htu: str
    ) -> None:
        await refused(verifier, client.proof(htu=htu), "htu is not an absolute http")

    @pytest.mark.parametrize("htm", ["GET", "post"])
    async def test_wrong_htm(self, verifier: DpopVerifier, client: Client, htm: str) -> None:
        await refused(verifier, client.proof(htm=htm), "htm does not match")

    async def test_missing_ath(self, verifier: DpopVerifier, client: Client) -> None:
        await refused(verifier, client.proof(), "must carry 'ath'", access_token=ACCESS_TOKEN)

    async def test_wrong_ath(self, verifier: DpopVerifier, client: Client) -> None:
        proof = client.proof(ath=ath_for("another-token"))
        await refused(verifier, proof, "ath does not match", access_token=ACCESS_TOKEN)

    async def test_expected_jkt_mismatch(
        self, verifier: DpopVerifier, client: Client, clock: FrozenClock
    ) -> None:
        bound_to = Client(_key("Ed25519"), "Ed25519", clock).jkt
        await refused(verifier, client.proof(), "key does not match", expected_jkt=bound_to)

    async def test_stale_iat(self, verifier: DpopVerifier, client: Client) -> None:
        await refused(verifier, client.proof(iat=client.iat() - 61), "too old")

    async def test_future_iat(self, verifier: DpopVerifier, client: Client) -> None:
        await refused(verifier, client.proof(iat=client.iat() + 6), "in the future")


class TestVerifyRefusesReplay:
    async def test_replayed_jti(self, verifier: DpopVerifier, client: Client) -> None:
        proof = client.proof()
        await verifier.verify(proof, method="POST", url=URL)
        await refused(verifier, proof, "DPoP proof replayed")

    async def test_replay_on_another_replica(
        self, kv: Stores, clock: FrozenClock, client: Client
    ) -> None:
        first, second = (
            DpopVerifier(kv.store, SECRET, clock),
            DpopVerifier(kv.replica(), SECRET, clock),
        )
        proof = client.proof()
        await first.verify(proof, method="POST", url=URL)
        await refused(second, proof, "DPoP proof replayed")

    async def test_refused_proof_does_not_burn_its_jti(
        self, verifier: DpopVerifier, client: Client
    ) -> None:
        proof = client.proof()
        await refused(verifier, proof, "htm does not match", method="GET")
        await verifier.verify(proof, method="POST", url=URL)


class TestVerifyRefusesBadHeaders:
    @pytest.mark.parametrize("alg", ["ES256", "Ed25519", "RS256"])
    async def test_private_key_in_header(
        self, verifier: DpopVerifier, clock: FrozenClock, alg: str
    ) -> None:
        key = _key(alg)
        proof = Client(key, alg, clock).proof(header={"jwk": key.as_dict(private=True)})
        await refused(verifier, proof, "private key material")

    async def test_alg_none(self, verifier: DpopVerifier, client: Client) -> None:
        signed = client.proof()
        header = {"typ": "dpop+jwt", "alg": "none", "jwk": client.key.as_dict(private=False)}
        unsigned = f"{b64(json.dumps(header).encode())}.{signed.split('.')[1]}."
        await refused(verifier, unsigned, "alg 'none' is not allowed")

    async def test_hs256_keyed_with_the_public_key(
        self, verifier: DpopVerifier, clock: FrozenClock
    ) -> None:
        public = _key("ES256").as_dict(private=False)
        secret = OctKey.import_key(json.dumps(public, sort_keys=True).encode())
        proof = Client(_key("ES256"), "HS256", clock).proof(signer=secret)
        await refused(verifier, proof, "alg 'HS256' is not allowed")

    @pytest.mark.parametrize("typ", ["JWT", "at+jwt", None])
    async def test_wrong_typ(self, verifier: DpopVerifier, client: Client, typ: str | None) -> None:
        proof = client.proof(header={"typ": typ}) if typ else client.proof(omit=["typ"])
        await refused(verifier, proof, "typ must be 'dpop\\+jwt'")

    async def test_missing_jwk(self, verifier: DpopVerifier, client: Client) -> None:
        await refused(verifier, client.proof(omit=["jwk"]), "must carry the public key")

    async def test_jwk_of_another_key_type_than_alg(
        self, verifier: DpopVerifier, client: Client
    ) -> None:
        ed_jwk = _key("Ed25519").as_dict(private=False)
        await refused(verifier, client.proof(header={"jwk": ed_jwk}), "not a key for alg ES256")

    async def test_signature_by_a_different_key(
        self, verifier: DpopVerifier, client: Client
    ) -> None:
        other = ECKey.generate_key("P-256")
        await refused(verifier, client.proof(signer=other), "signature is invalid")

    async def test_payload_altered_after_signing(
        self, verifier: DpopVerifier, client: Client
    ) -> None:
        header, _, signature = client.proof().split(".")
        payload = client.proof(jti="forged").split(".")[1]
        await refused(verifier, f"{header}.{payload}.{signature}", "signature is invalid")

    async def test_alg_outside_the_configured_list(self, kv: Stores, clock: FrozenClock) -> None:
        only_es256 = DpopVerifier(kv.store, SECRET, clock, algorithms=["ES256"])
        proof = Client(_key("RS256"), "RS256", clock).proof()
        await refused(only_es256, proof, "alg 'RS256' is not allowed")

    async def test_rsa_key_below_2048_bits(
        self, verifier: DpopVerifier, clock: FrozenClock
    ) -> None:
        private = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - must be refused
        numbers = private.public_key().public_numbers()
        jwk = {
            "kty": "RSA",
            "e": b64(numbers.e.to_bytes(3, "big")),
            "n": b64(numbers.n.to_bytes(128, "big")),
        }
        header = b64(json.dumps({"typ": "dpop+jwt", "alg": "RS256", "jwk": jwk}).encode())
        claims = {"jti": "small", "htm": "POST", "htu": URL, "iat": int(clock.timestamp())}
        payload = b64(json.dumps(claims).encode())
        signature = private.sign(
            f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        await refused(verifier, f"{header}.{payload}.{b64(signature)}", "2048 to 8192 bits")


class TestVerifyRefusesMalformedProofs:
    @pytest.mark.parametrize(
        ("proof", "match"),
        [
            (None, "missing"),
            ("", "missing"),
            ("not-a-jws", "not a compact JWS"),
            ("a.b.c.d", "not a compact JWS"),
            ("a.b.c, d.e.f", "more than one DPoP proof"),
            ("!!.e30.c2ln", "header is not base64url"),
            (f"{b64(b'[1]')}.e30.c2ln", "header is not a JSON object"),
            ("x" * 9000, "too large"),
        ],
    )
    async def test_malformed_proof(
        self, verifier: DpopVerifier, proof: str | None, match: str
    ) -> None:
        await refused(verifier, proof, match)

    @pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat"])
    async def test_missing_claim(self, verifier: DpopVerifier, client: Client, claim: str) -> None:
        await refused(verifier, client.proof(omit=[claim]), f"claim '{claim}' must be")

    @pytest.mark.parametrize(
        ("claims", "match"),
        [({"iat": "1700000000"}, "'iat' must be a number"), ({"jti": "j" * 257}, "'jti' must be")],
    )
    async def test_claim_of_the_wrong_shape(
        self, verifier: DpopVerifier, client: Client, claims: dict[str, Any], match: str
    ) -> None:
        await refused(verifier, client.proof(**claims), match)


class TestNonces:
    @pytest.fixture
    def strict(self, kv: Stores, clock: FrozenClock) -> DpopVerifier:
        return DpopVerifier(kv.store, SECRET, clock, nonce_required=True)

    async def test_required_nonce_is_issued_then_accepted(
        self, strict: DpopVerifier, client: Client
    ) -> None:
        with pytest.raises(UseDpopNonce, match="must carry a server nonce") as caught:
            await strict.verify(client.proof(), method="POST", url=URL)
        assert caught.value.error == "use_dpop_nonce"
        nonce = caught.value.nonce
        accepted = await strict.verify(client.proof(nonce=nonce), method="POST", url=URL)
        assert accepted.jkt == client.jkt

    async def test_nonce_from_another_secret_is_refused(
        self, strict: DpopVerifier, kv: Stores, clock: FrozenClock, client: Client
    ) -> None:
        foreign = DpopVerifier(kv.store, b"another-secret-0123456789", clock).new_nonce()
        with pytest.raises(UseDpopNonce, match="invalid or expired") as caught:
            await strict.verify(client.proof(nonce=foreign), method="POST", url=URL)
        assert caught.value.nonce == strict.new_nonce() != foreign

    async def test_nonce_older_than_two_windows_is_refused(
        self, strict: DpopVerifier, clock: FrozenClock, client: Client
    ) -> None:
        nonce = strict.new_nonce()
        clock.advance(600)
        with pytest.raises(UseDpopNonce, match="invalid or expired") as caught:
            await strict.verify(client.proof(nonce=nonce), method="POST", url=URL)
        assert caught.value.nonce != nonce

    async def test_nonce_of_the_previous_window_is_accepted(
        self, strict: DpopVerifier, clock: FrozenClock, client: Client
    ) -> None:
        nonce = strict.new_nonce()
        clock.advance(300)
        assert strict.new_nonce() != nonce
        await strict.verify(client.proof(nonce=nonce), method="POST", url=URL)

    async def test_nonce_works_on_another_replica_sharing_the_secret(
        self, kv: Stores, clock: FrozenClock, client: Client
    ) -> None:
        issuer = DpopVerifier(kv.store, SECRET, clock, nonce_required=True)
        other = DpopVerifier(kv.replica(), SECRET, clock, nonce_required=True)
        await other.verify(client.proof(nonce=issuer.new_nonce()), method="POST", url=URL)

    async def test_unknown_nonce_is_refused_even_when_not_required(
        self, verifier: DpopVerifier, client: Client
    ) -> None:
        with pytest.raises(UseDpopNonce) as caught:
            await verifier.verify(client.proof(nonce="made-up"), method="POST", url=URL)
        assert caught.value.nonce == verifier.new_nonce()


class TestDpopVerifierConfiguration:
    @pytest.mark.parametrize("algorithms", [["none"], ["HS256"], []])
    def test_unsafe_or_empty_algorithm_list_is_rejected(
        self, kv: Stores, clock: FrozenClock, algorithms: list[str]
    ) -> None:
        with pytest.raises(ValueError, match="DPoP algorithms"):
            DpopVerifier(kv.store, SECRET, clock, algorithms=algorithms)

    def test_short_secret_is_rejected(self, kv: Stores, clock: FrozenClock) -> None:
        with pytest.raises(ValueError, match="secret_key"):
            DpopVerifier(kv.store, b"short", clock)


class TestJwkThumbprint:
    def test_rfc7638_example(self) -> None:
        n = (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
            "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
            "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI"
            "4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        )
        jwk = {"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
        assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

    @pytest.mark.parametrize("alg", ["ES256", "Ed25519", "RS256"])
    def test_matches_joserfc(self, alg: str) -> None:
        key = _key(alg)
        assert jwk_thumbprint(key.as_dict(private=False)) == key.thumbprint()

    def test_symmetric_key_has_no_thumbprint_here(self) -> None:
        with pytest.raises(ValueError, match="no thumbprint"):
            jwk_thumbprint({"kty": "oct", "k": "c2VjcmV0"})


class TestAthFor:
    def test_rfc9449_example(self) -> None:
        token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
        assert ath_for(token) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
