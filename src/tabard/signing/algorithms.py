"""Signing algorithms: key generation, public JWKs and raw JWS signatures.

ES256 (P-256, RFC 7518 §3.4), Ed25519 (fully specified JOSE name, RFC 9864 §2; the older
`EdDSA` name is accepted on input) and RS256 (RSA 3072, RFC 7518 §3.3). Signing uses the
`cryptography` key objects directly: it is on the token-issuance hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tabard.core.jose import b64url_encode

RSA_KEY_BITS = 3072
_P256_COORDINATE_BYTES = 32
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey


class SigningAlgorithm(StrEnum):
    """The JOSE `alg` values Tabard signs with (and publishes)."""

    ES256 = "ES256"
    ED25519 = "Ed25519"
    RS256 = "RS256"


# RFC 9864 §2 deprecates the polymorphic `EdDSA`; with Ed25519 keys it means `Ed25519`.
_ALIASES = {"eddsa": SigningAlgorithm.ED25519}
_BY_LOWER_NAME = {algorithm.value.lower(): algorithm for algorithm in SigningAlgorithm} | _ALIASES
ACCEPTED_NAMES = ("ES256", "Ed25519", "EdDSA", "RS256")


def parse_algorithm(name: str) -> SigningAlgorithm:
    """The algorithm named `name` (any case; `EdDSA` means Ed25519); ValueError otherwise."""
    algorithm = _BY_LOWER_NAME.get(name.strip().lower())
    if algorithm is None:
        raise ValueError(f"unsupported signing algorithm {name!r} ({' | '.join(ACCEPTED_NAMES)})")
    return algorithm


@dataclass(frozen=True, slots=True)
class SigningMaterial:
    """An opened private key and what fast JWS signing needs: `kid`, `alg` and `sign`."""

    kid: str
    alg: str
    private_key: PrivateKey = field(repr=False)
    _signer: Callable[[bytes], bytes] = field(repr=False, compare=False)

    def sign(self, signing_input: bytes) -> bytes:
        """The JWS signature bytes over `signing_input` (RFC 7515 §5.1 step 5)."""
        return self._signer(signing_input)


def material(kid: str, alg: SigningAlgorithm, private_key: PrivateKey) -> SigningMaterial:
    """Bind `private_key` to its algorithm's signer; TypeError if the key does not fit `alg`."""
    return SigningMaterial(kid, alg.value, private_key, _signer_for(alg, private_key))


def generate_private_key(alg: SigningAlgorithm) -> PrivateKey:
    """A fresh private key for `alg` (RSA takes a few hundred milliseconds: call off-loop)."""
    if alg is SigningAlgorithm.ES256:
        return ec.generate_private_key(ec.SECP256R1())
    if alg is SigningAlgorithm.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)


def private_pem(private_key: PrivateKey) -> bytes:
    """PKCS #8 PEM, unencrypted: the caller seals it with the master key."""
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_pem(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    ):
        raise TypeError(f"unsupported private key type {type(key).__name__}")
    return key


def public_jwk(public_key: PublicKey) -> dict[str, str]:
    """The required members of the public JWK (RFC 7518 §6, RFC 8037 §2), no `kid` or `alg`."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        numbers = public_key.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url_encode(numbers.x.to_bytes(_P256_COORDINATE_BYTES, "big")),
            "y": b64url_encode(numbers.y.to_bytes(_P256_COORDINATE_BYTES, "big")),
        }
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}
    numbers_rsa = public_key.public_numbers()
    return {
        "kty": "RSA",
        "n": b64url_encode(_unsigned(numbers_rsa.n)),
        "e": b64url_encode(_unsigned(numbers_rsa.e)),
    }


def published_jwk(kid: str, alg: str, jwk: dict[str, Any]) -> dict[str, Any]:
    """The JWK as published in a JWK Set (RFC 7517 §4): key members plus kid, alg, use."""
    return {**jwk, "kid": kid, "alg": parse_algorithm(alg).value, "use": "sig"}


def _signer_for(alg: SigningAlgorithm, key: PrivateKey) -> Callable[[bytes], bytes]:
    if (
        alg is SigningAlgorithm.ES256
        and isinstance(key, ec.EllipticCurvePrivateKey)
        and isinstance(key.curve, ec.SECP256R1)
    ):
        return lambda data: _raw_ecdsa(key.sign(data, _ECDSA_SHA256))
    if alg is SigningAlgorithm.ED25519 and isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign
    if alg is SigningAlgorithm.RS256 and isinstance(key, rsa.RSAPrivateKey):
        return lambda data: key.sign(data, _PKCS1V15, _SHA256)
    raise TypeError(f"a {type(key).__name__} cannot sign {alg.value}")


def _raw_ecdsa(der: bytes) -> bytes:
    """JWS wants ECDSA signatures as fixed-size r || s, not DER (RFC 7518 §3.4)."""
    r, s = decode_dss_signature(der)
    return r.to_bytes(_P256_COORDINATE_BYTES, "big") + s.to_bytes(_P256_COORDINATE_BYTES, "big")


def _unsigned(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
