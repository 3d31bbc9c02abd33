"""The did:key DID method for Ed25519 and P-256 public keys.

Implements the W3C CCG did:key specification
(https://w3c-ccg.github.io/did-method-key/): a DID is ``did:key:`` followed by the
multibase (base58btc, prefix ``z``) encoding of a multicodec-prefixed public key.
Ed25519 keys are carried raw (32 bytes, codec ``ed25519-pub`` 0xed); P-256 keys as
SEC1 compressed points (33 bytes, codec ``p256-pub`` 0x1200). Resolution is purely
local: the DID document is derived from the key, nothing is fetched.
"""

from collections.abc import Mapping
from typing import Any

import base58
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tabard.core.jose import b64url_decode, b64url_encode

__all__ = ["InvalidDidKey", "did_key_document", "did_key_from_jwk", "jwk_from_did_key"]

_DID_PREFIX = "did:key:"
# Multicodec codes, already written as unsigned varints (0xed -> ed 01; 0x1200 -> 80 24).
_ED25519_CODEC = b"\xed\x01"
_P256_CODEC = b"\x80\x24"
_ED25519_LEN = 32
_P256_COORD_LEN = 32


class InvalidDidKey(ValueError):
    """A did:key or JWK that is malformed or uses an unsupported key type."""


def _b64url_decode(value: Any, name: str) -> bytes:
    """Decode an unpadded base64url JWK member, rejecting non-strings and bad alphabet."""
    if not isinstance(value, str):
        raise InvalidDidKey(f"JWK member {name!r} must be a base64url string")
    try:
        return b64url_decode(value)
    except ValueError as exc:
        raise InvalidDidKey(f"JWK member {name!r} is not valid base64url") from exc


def _p256_point(encoded: bytes) -> ec.EllipticCurvePublicKey:
    """Load a SEC1 P-256 point; cryptography checks it lies on the curve."""
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), encoded)
    except ValueError as exc:
        raise InvalidDidKey("not a valid P-256 public key point") from exc


def _multicodec_key(jwk: Mapping[str, Any]) -> bytes:
    """Return the multicodec-prefixed public key bytes for a supported JWK."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "OKP" and crv == "Ed25519":
        x = _b64url_decode(jwk.get("x"), "x")
        if len(x) != _ED25519_LEN:
            raise InvalidDidKey(f"Ed25519 key must be {_ED25519_LEN} bytes, got {len(x)}")
        return _ED25519_CODEC + x
    if kty == "EC" and crv == "P-256":
        x, y = _b64url_decode(jwk.get("x"), "x"), _b64url_decode(jwk.get("y"), "y")
        if len(x) != _P256_COORD_LEN or len(y) != _P256_COORD_LEN:
            raise InvalidDidKey("P-256 coordinates must be 32 bytes each")
        # Round-trip through cryptography so an off-curve JWK never becomes a DID.
        point = _p256_point(b"\x04" + x + y)
        return _P256_CODEC + point.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
    raise InvalidDidKey(f"unsupported JWK key type kty={kty!r} crv={crv!r}")


def did_key_from_jwk(jwk: Mapping[str, Any]) -> str:
    """Encode an Ed25519 (OKP) or P-256 (EC) public JWK as a did:key."""
    return _DID_PREFIX + "z" + base58.b58encode(_multicodec_key(jwk)).decode("ascii")


def _decode_identifier(did: str) -> bytes:
    """Strip method and multibase prefix from a did:key (URL) and base58-decode it."""
    if not isinstance(did, str) or not did.startswith(_DID_PREFIX):
        raise InvalidDidKey(f"not a did:key identifier: {did!r}")
    # A DID URL such as did:key:z...#z... names a key within the same DID.
    multibase = did[len(_DID_PREFIX) :].split("#", 1)[0]
    if not multibase.startswith("z"):
        raise InvalidDidKey("did:key must use base58btc multibase (prefix 'z')")
    try:
        return base58.b58decode(multibase[1:])
    except ValueError as exc:
        raise InvalidDidKey("did:key identifier is not valid base58btc") from exc


def jwk_from_did_key(did: str) -> dict[str, str]:
    """Decode a did:key (or did:key URL) into the public JWK it encodes."""
    data = _decode_identifier(did)
    if data.startswith(_ED25519_CODEC):
        key = data[len(_ED25519_CODEC) :]
        if len(key) != _ED25519_LEN:
            raise InvalidDidKey(f"Ed25519 key must be {_ED25519_LEN} bytes, got {len(key)}")
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(key)}
    if data.startswith(_P256_CODEC):
        key = data[len(_P256_CODEC) :]
        if len(key) != 1 + _P256_COORD_LEN:
            raise InvalidDidKey(f"P-256 compressed key must be 33 bytes, got {len(key)}")
        numbers = _p256_point(key).public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url_encode(numbers.x.to_bytes(_P256_COORD_LEN, "big")),
            "y": b64url_encode(numbers.y.to_bytes(_P256_COORD_LEN, "big")),
        }
    raise InvalidDidKey("did:key uses an unsupported multicodec key type")


def did_key_document(did: str) -> dict[str, Any]:
    """Build the DID document the did:key spec derives from the identifier."""
    jwk_from_did_key(did)  # validate the key before publishing a document for it
    did = did.split("#", 1)[0]
    method_id = f"{did}#{did[len(_DID_PREFIX) :]}"
    return {
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
        "id": did,
        "verificationMethod": [
            {
                "id": method_id,
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": did[len(_DID_PREFIX) :],
            }
        ],
        "authentication": [method_id],
        "assertionMethod": [method_id],
        "capabilityDelegation": [method_id],
        "capabilityInvocation": [method_id],
    }
