"""ES256, Ed25519 and RS256 keys: signatures made with `SigningMaterial.sign` verify with joserfc
given only the published JWKS; `kid` is the RFC 7638 thumbprint."""

from __future__ import annotations

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jws
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet, import_key

from tabard.core.config import ConfigError, load_settings
from tabard.core.jose import jwk_thumbprint as thumbprint
from tabard.core.runtime import Runtime
from tabard.signing import service as keys
from tabard.signing.algorithms import (
    SigningAlgorithm,
    generate_private_key,
    material,
    parse_algorithm,
    public_jwk,
)
from tests.signing.support import active, b64url, compact_jws, rotate

ALGORITHMS = ["ES256", "Ed25519", "RS256"]


class TestPublishedKeysVerify:
    @pytest.mark.parametrize("alg", ALGORITHMS)
    async def test_a_signature_verifies_with_only_the_published_jwks(
        self, client: httpx.AsyncClient, runtime: Runtime, alg: str
    ) -> None:
        await rotate(runtime, algorithm=alg)
        signer = await active(runtime)
        assert signer.alg == alg
        token = compact_jws(signer, {"sub": "agent"})
        key_set = KeySet.import_key_set((await client.get("/.well-known/jwks.json")).json())
        verified = jws.deserialize_compact(token, key_set, algorithms=[alg])
        assert verified.payload == b'{"sub": "agent"}'
        header, _, signature = token.split(".")
        forged_payload = b64url(b'{"sub": "admin"}')
        forged = f"{header}.{forged_payload}.{signature}"
        with pytest.raises(BadSignatureError):
            jws.deserialize_compact(forged, key_set, algorithms=[alg])

    @pytest.mark.parametrize("alg", ALGORITHMS)
    async def test_kid_is_the_rfc7638_thumbprint_of_the_published_key(
        self, client: httpx.AsyncClient, runtime: Runtime, alg: str
    ) -> None:
        rotation = await rotate(runtime, algorithm=alg)
        response = await client.get("/.well-known/jwks.json")
        key = {k["kid"]: k for k in response.json()["keys"]}[rotation.key.kid]
        assert key["alg"] == alg
        assert key["use"] == "sig"
        assert import_key(key).thumbprint() == rotation.key.kid

    async def test_eddsa_is_accepted_and_published_under_its_rfc9864_name(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        rotation = await rotate(runtime, algorithm="EdDSA")
        assert rotation.key.alg == "Ed25519"
        (key,) = [
            k
            for k in (await client.get("/.well-known/jwks.json")).json()["keys"]
            if k["kid"] == rotation.key.kid
        ]
        assert (key["alg"], key["kty"], key["crv"]) == ("Ed25519", "OKP", "Ed25519")

    @pytest.mark.parametrize("alg", ALGORITHMS)
    async def test_detached_signatures_of_agent_cards_verify_for_every_algorithm(
        self, client: httpx.AsyncClient, runtime: Runtime, alg: str
    ) -> None:
        await rotate(runtime, algorithm=alg)
        header, signature = keys.sign_detached(await active(runtime), b'{"card":1}', typ="JOSE")
        key_set = KeySet.import_key_set((await client.get("/.well-known/jwks.json")).json())
        payload = b64url(b'{"card":1}')
        compact = f"{header}.{payload}.{signature}"
        assert jws.deserialize_compact(compact, key_set, algorithms=[alg]).headers()["typ"] == (
            "JOSE"
        )


class TestSigningMaterial:
    def test_es256_signatures_are_raw_r_and_s(self) -> None:
        """RFC 7518 §3.4: 64 bytes, not DER; the DER form would not verify as a JWS."""
        key = generate_private_key(SigningAlgorithm.ES256)
        jwk = public_jwk(key.public_key())
        signature = material(thumbprint(jwk), SigningAlgorithm.ES256, key).sign(b"input")
        assert len(signature) == 64
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        key.public_key().verify(encode_dss_signature(r, s), b"input", ec.ECDSA(hashes.SHA256()))

    @pytest.mark.parametrize("alg", ALGORITHMS)
    def test_thumbprint_matches_joserfc(self, alg: str) -> None:
        key = generate_private_key(parse_algorithm(alg))
        jwk = public_jwk(key.public_key())
        assert thumbprint(jwk) == import_key(dict(jwk)).thumbprint()

    def test_rsa_keys_are_3072_bits(self) -> None:
        key = generate_private_key(SigningAlgorithm.RS256)
        assert isinstance(key, rsa.RSAPrivateKey)
        assert key.key_size == 3072

    def test_a_key_of_another_type_cannot_become_material(self) -> None:
        key = generate_private_key(SigningAlgorithm.ED25519)
        with pytest.raises(TypeError, match="cannot sign ES256"):
            material("kid", SigningAlgorithm.ES256, key)

    def test_an_ecdsa_key_off_p256_cannot_sign_es256(self) -> None:
        key = ec.generate_private_key(ec.SECP384R1())
        with pytest.raises(TypeError):
            material("kid", SigningAlgorithm.ES256, key)


class TestAlgorithmNames:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [("ES256", "ES256"), ("es256", "ES256"), ("EdDSA", "Ed25519"), ("Ed25519", "Ed25519")],
    )
    def test_names_are_normalised(self, given: str, expected: str) -> None:
        assert parse_algorithm(given).value == expected
        assert load_settings(signing_algorithm=given).signing_algorithm == expected

    @pytest.mark.parametrize("name", ["HS256", "none", "ES384", ""])
    def test_other_names_are_refused(self, name: str) -> None:
        with pytest.raises(ValueError, match="unsupported signing algorithm"):
            parse_algorithm(name)
        with pytest.raises(ConfigError, match="TABARD_SIGNING_ALGORITHM"):
            load_settings(signing_algorithm=name)
