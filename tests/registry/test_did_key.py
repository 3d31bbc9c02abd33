"""did:key encoding, decoding and DID documents, checked against the spec's published vectors."""

from __future__ import annotations

import base64
from typing import Any

import base58
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tabard.registry.did_key import (
    InvalidDidKey,
    did_key_document,
    did_key_from_jwk,
    jwk_from_did_key,
)

# Ed25519 vectors: w3c-ccg/did-method-key, test-vectors/ed25519-x25519.json (commit e7839a8).
# The file gives each key as publicKeyBase58 and the private seed; the JWK "x" below is that
# publicKeyBase58 re-encoded as base64url (TestPublishedVectors cross-checks it from the seed).
ED25519_VECTORS: list[tuple[str, str, dict[str, str]]] = [
    (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
        {"kty": "OKP", "crv": "Ed25519", "x": "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik"},
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000001",
        "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG",
        {"kty": "OKP", "crv": "Ed25519", "x": "TLWr9q15-_WrvMr8wmnYXNJlHtS4hbWGnyQa7fCluik"},
    ),
]
ED25519_PUBLIC_KEY_BASE58 = {
    "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp": (
        "4zvwRjXUKGfvwnParsHAS3HuSVzV5cA4McphgmoCtajS"
    ),
    "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG": (
        "6ASf5EcmmEHTgDJ4X4ZT5vT6iHVJBXPg5AN5YoTCpGWt"
    ),
}

# P-256 vectors: w3c-ccg/did-method-key, test-vectors/nist-curves.json (commit e7839a8),
# verificationMethod.publicKeyJwk of each entry, verbatim.
P256_VECTORS: list[tuple[str, dict[str, str]]] = [
    (
        "did:key:zDnaerx9CtbPJ1q36T5Ln5wYt3MQYeGRG5ehnPAmxcf5mDZpv",
        {
            "kty": "EC",
            "crv": "P-256",
            "x": "igrFmi0whuihKnj9R3Om1SoMph72wUGeFaBbzG2vzns",
            "y": "efsX5b10x8yjyrj4ny3pGfLcY7Xby1KzgqOdqnsrJIM",
        },
    ),
    (
        "did:key:zDnaerDaTF5BXEavCrfRZEk316dpbLsfPDZ3WJ5hRTPFU2169",
        {
            "kty": "EC",
            "crv": "P-256",
            "x": "fyNYMN0976ci7xqiSdag3buk-ZCwgXU4kz9XNkBlNUI",
            "y": "hW2ojTNfH7Jbi8--CJUo3OCbH3y5n91g-IMA9MLMbTU",
        },
    ),
]

ALL_VECTORS: list[tuple[str, dict[str, str]]] = [
    (did, jwk) for _, did, jwk in ED25519_VECTORS
] + P256_VECTORS
VECTOR_IDS = [did[len("did:key:") : len("did:key:") + 12] for did, _ in ALL_VECTORS]

# Key types the spec defines but this module does not support, from the same vector files:
# X25519 (ed25519-x25519.json keyAgreement), P-384 (nist-curves.json), secp256k1 (secp256k1.json).
X25519_DID = "did:key:z6LShs9GGnqk85isEBzzshkuVWrVKsRp24GnDuHk8QWkARMW"
P384_DID = "did:key:z82Lm1MpAkeJcix9K8TMiLd5NMAhnwkjjCBeWHXyu3U4oT2MVJJKXkcVBgjGhnLBn2Kaau9"
SECP256K1_DID = "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _did_from_bytes(data: bytes) -> str:
    return "did:key:z" + base58.b58encode(data).decode()


def _ed25519_jwk(key: ed25519.Ed25519PublicKey) -> dict[str, str]:
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}


def _ec_jwk(key: ec.EllipticCurvePublicKey, crv: str) -> dict[str, str]:
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": crv,
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }


class TestPublishedVectors:
    @pytest.mark.parametrize(("seed", "did", "jwk"), ED25519_VECTORS, ids=VECTOR_IDS[:2])
    def test_ed25519_jwk_matches_the_vector_seed_and_base58_key(
        self, seed: str, did: str, jwk: dict[str, str]
    ) -> None:
        public = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed)).public_key()
        assert _ed25519_jwk(public) == jwk
        assert _b64url(base58.b58decode(ED25519_PUBLIC_KEY_BASE58[did])) == jwk["x"]


class TestDidKeyFromJwk:
    @pytest.mark.parametrize(("did", "jwk"), ALL_VECTORS, ids=VECTOR_IDS)
    def test_published_jwk_encodes_to_published_did(self, did: str, jwk: dict[str, str]) -> None:
        assert did_key_from_jwk(jwk) == did

    def test_extra_jwk_members_are_ignored(self) -> None:
        did, jwk = P256_VECTORS[0]
        assert did_key_from_jwk({**jwk, "kid": "k1", "use": "sig", "alg": "ES256"}) == did

    def test_rsa_jwk_is_rejected(self) -> None:
        numbers = rsa.generate_private_key(65537, 2048).public_key().public_numbers()
        jwk = {"kty": "RSA", "n": _b64url(numbers.n.to_bytes(256, "big")), "e": "AQAB"}
        with pytest.raises(InvalidDidKey, match="unsupported"):
            did_key_from_jwk(jwk)

    def test_secp256k1_jwk_is_rejected(self) -> None:
        key = ec.generate_private_key(ec.SECP256K1()).public_key()
        with pytest.raises(InvalidDidKey, match="unsupported"):
            did_key_from_jwk(_ec_jwk(key, "secp256k1"))

    def test_p256_point_off_the_curve_is_rejected(self) -> None:
        jwk = {**P256_VECTORS[0][1], "y": _b64url((1).to_bytes(32, "big"))}
        with pytest.raises(InvalidDidKey, match="P-256"):
            did_key_from_jwk(jwk)

    def test_wrong_length_ed25519_key_is_rejected(self) -> None:
        with pytest.raises(InvalidDidKey, match="32 bytes"):
            did_key_from_jwk({"kty": "OKP", "crv": "Ed25519", "x": _b64url(b"\x01" * 31)})

    def test_missing_coordinate_is_rejected(self) -> None:
        jwk = {k: v for k, v in P256_VECTORS[0][1].items() if k != "y"}
        with pytest.raises(InvalidDidKey, match="'y'"):
            did_key_from_jwk(jwk)

    def test_non_base64url_coordinate_is_rejected(self) -> None:
        with pytest.raises(InvalidDidKey, match="base64url"):
            did_key_from_jwk({"kty": "OKP", "crv": "Ed25519", "x": "not*base64url"})


class TestJwkFromDidKey:
    @pytest.mark.parametrize(("did", "jwk"), ALL_VECTORS, ids=VECTOR_IDS)
    def test_published_did_decodes_to_published_jwk(self, did: str, jwk: dict[str, str]) -> None:
        assert jwk_from_did_key(did) == jwk

    def test_did_url_fragment_is_ignored(self) -> None:
        did, jwk = P256_VECTORS[1]
        assert jwk_from_did_key(f"{did}#{did[len('did:key:') :]}") == jwk

    def test_fresh_ed25519_key_round_trips(self) -> None:
        jwk = _ed25519_jwk(ed25519.Ed25519PrivateKey.generate().public_key())
        did = did_key_from_jwk(jwk)
        assert did.startswith("did:key:z6Mk")
        assert jwk_from_did_key(did) == jwk

    def test_fresh_p256_keys_of_both_y_parities_round_trip(self) -> None:
        # Both published P-256 vectors compress with prefix 03 (odd y), so keep generating
        # keys until an even-y (02) key has round-tripped too.
        seen: set[int] = set()
        for _ in range(64):
            key = ec.generate_private_key(ec.SECP256R1()).public_key()
            jwk = _ec_jwk(key, "P-256")
            did = did_key_from_jwk(jwk)
            assert did.startswith("did:key:zDn")
            assert jwk_from_did_key(did) == jwk
            seen.add(key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)[0])
            if seen == {2, 3}:
                return
        pytest.fail(f"only saw compression prefixes {seen}")

    def test_other_did_method_is_rejected(self) -> None:
        with pytest.raises(InvalidDidKey, match="not a did:key"):
            jwk_from_did_key("did:web:example.com")

    def test_missing_multibase_prefix_is_rejected(self) -> None:
        did = ED25519_VECTORS[0][1]
        with pytest.raises(InvalidDidKey, match="base58btc multibase"):
            jwk_from_did_key("did:key:" + did[len("did:key:z") :])

    @pytest.mark.parametrize("bad", ["0", "O", "I", "l", "!"])
    def test_non_base58_character_is_rejected(self, bad: str) -> None:
        with pytest.raises(InvalidDidKey, match="base58btc"):
            jwk_from_did_key(ED25519_VECTORS[0][1][:-1] + bad)

    @pytest.mark.parametrize("did", [X25519_DID, P384_DID, SECP256K1_DID], ids=str)
    def test_unsupported_published_key_type_is_rejected(self, did: str) -> None:
        with pytest.raises(InvalidDidKey, match="multicodec"):
            jwk_from_did_key(did)

    def test_unknown_multicodec_prefix_is_rejected(self) -> None:
        with pytest.raises(InvalidDidKey, match="multicodec"):
            jwk_from_did_key(_did_from_bytes(b"\x00\x01" + b"\x07" * 32))

    def test_empty_identifier_is_rejected(self) -> None:
        with pytest.raises(InvalidDidKey):
            jwk_from_did_key("did:key:z")

    def test_truncated_ed25519_key_is_rejected(self) -> None:
        raw = base58.b58decode(ED25519_VECTORS[0][1][len("did:key:z") :])
        with pytest.raises(InvalidDidKey, match="32 bytes"):
            jwk_from_did_key(_did_from_bytes(raw[:-1]))

    def test_truncated_p256_key_is_rejected(self) -> None:
        raw = base58.b58decode(P256_VECTORS[0][0][len("did:key:z") :])
        with pytest.raises(InvalidDidKey, match="33 bytes"):
            jwk_from_did_key(_did_from_bytes(raw[:-1]))

    def test_p256_point_off_the_curve_is_rejected(self) -> None:
        # x = 1 has no square root of x^3 - 3x + b on P-256, whichever parity byte is used.
        with pytest.raises(InvalidDidKey, match="P-256"):
            jwk_from_did_key(_did_from_bytes(b"\x80\x24\x02" + (1).to_bytes(32, "big")))

    def test_uncompressed_p256_encoding_is_rejected(self) -> None:
        # The spec mandates the 33-byte compressed form; a 65-byte 0x04 point is not a did:key.
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        raw = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        with pytest.raises(InvalidDidKey, match="33 bytes"):
            jwk_from_did_key(_did_from_bytes(b"\x80\x24" + raw))


class TestDidKeyDocument:
    @pytest.mark.parametrize(("did", "jwk"), ALL_VECTORS, ids=VECTOR_IDS)
    def test_document_has_one_multikey_method_referenced_by_every_relationship(
        self, did: str, jwk: dict[str, str]
    ) -> None:
        multibase = did[len("did:key:") :]
        method_id = f"{did}#{multibase}"
        document: dict[str, Any] = did_key_document(did)
        assert document == {
            "@context": [
                "https://www.w3.org/ns/did/v1",
                "https://w3id.org/security/multikey/v1",
            ],
            "id": did,
            "verificationMethod": [
                {
                    "id": method_id,
                    "type": "Multikey",
                    "controller": did,
                    "publicKeyMultibase": multibase,
                }
            ],
            "authentication": [method_id],
            "assertionMethod": [method_id],
            "capabilityDelegation": [method_id],
            "capabilityInvocation": [method_id],
        }

    def test_document_for_did_url_describes_the_bare_did(self) -> None:
        did = ED25519_VECTORS[1][1]
        assert did_key_document(f"{did}#{did[len('did:key:') :]}") == did_key_document(did)

    def test_document_for_invalid_did_is_rejected(self) -> None:
        with pytest.raises(InvalidDidKey):
            did_key_document("did:key:z6Mk")

    def test_document_for_other_method_is_rejected(self) -> None:
        with pytest.raises(InvalidDidKey, match="not a did:key"):
            did_key_document("did:web:example.com")
