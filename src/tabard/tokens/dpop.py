"""DPoP proof verification (RFC 9449): the checks of §4.3, `ath` (§7.1), `jkt` (§6.1),
server nonces (§8, §9) and single-use `jti` (§11.1).

A proof is checked signature first, then claims (verify, then validate). Signatures are verified
with `cryptography` directly; the parsed header and its imported public key are cached by the
header's encoded form, because a client sends the same header with every proof. Nonces need no
shared storage: a nonce is a time window and its HMAC under a secret every replica holds. Replay
protection does need the shared store: each `jti` is claimed once per key in the kv store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tabard.core.clock import Clock
from tabard.core.jose import b64url_decode, b64url_encode, jwk_thumbprint
from tabard.core.kv import KeyValueStore
from tabard.tokens.htu import normalized_htu

DEFAULT_ALGORITHMS: Final = ("ES256", "ES384", "Ed25519", "EdDSA", "RS256", "PS256")
MAX_PROOF_LENGTH: Final = 8192  # an RSA-8192 proof fits; anything larger is not a DPoP proof
MAX_JTI_LENGTH: Final = 256
MIN_SECRET_LENGTH: Final = 16
MIN_RSA_BITS: Final = 2048
MAX_RSA_BITS: Final = 8192  # verification cost grows with the modulus; bound what a client may cost
MAX_RSA_EXPONENT_BITS: Final = 64

_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_NONCE_CONTEXT: Final = b"tabard/dpop-nonce/v1"
_NONCE_MAC_BYTES: Final = 16


class DpopError(Exception):
    """A proof that cannot be accepted; `error` is the RFC 9449 error code to send back."""

    error: ClassVar[str] = "invalid_dpop_proof"

    def __init__(self, description: str, nonce: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.nonce = nonce


class InvalidDpopProof(DpopError):
    """The proof is malformed, badly signed, replayed or does not match the request (§4.3)."""

    error = "invalid_dpop_proof"


class UseDpopNonce(DpopError):
    """The proof lacks a valid server nonce; `nonce` is a fresh one for the retry (§8, §9)."""

    error = "use_dpop_nonce"

    def __init__(self, description: str, nonce: str) -> None:
        super().__init__(description, nonce)
        self.nonce: str = nonce


@dataclass(frozen=True, slots=True)
class DpopProof:
    """An accepted proof: the RFC 7638 thumbprint of its key (for `cnf.jkt`), its jti, its key."""

    jkt: str
    jti: str
    public_jwk: dict[str, Any]


@lru_cache(maxsize=20_000)
def ath_for(token: str) -> str:
    """The `ath` claim for an access token: base64url(SHA-256(token)) (RFC 9449 §4.2).

    Remembered per token, as the token's verification is: an agent sends the same token with
    every proof for as long as it lives."""
    return b64url_encode(hashlib.sha256(token.encode()).digest())


@dataclass(frozen=True, slots=True)
class _Algorithm:
    kty: str
    curve: str | None  # the JWK `crv` the algorithm requires; None for RSA
    hash: type[hashes.HashAlgorithm] | None  # None for EdDSA, which hashes internally
    pss: bool = False


_ALGORITHMS: Final = {
    "ES256": _Algorithm("EC", "P-256", hashes.SHA256),
    "ES384": _Algorithm("EC", "P-384", hashes.SHA384),
    "ES512": _Algorithm("EC", "P-521", hashes.SHA512),
    "Ed25519": _Algorithm("OKP", "Ed25519", None),
    "EdDSA": _Algorithm("OKP", "Ed25519", None),  # the pre-RFC 9864 name, accepted on input
    "RS256": _Algorithm("RSA", None, hashes.SHA256),
    "RS384": _Algorithm("RSA", None, hashes.SHA384),
    "RS512": _Algorithm("RSA", None, hashes.SHA512),
    "PS256": _Algorithm("RSA", None, hashes.SHA256, pss=True),
    "PS384": _Algorithm("RSA", None, hashes.SHA384, pss=True),
    "PS512": _Algorithm("RSA", None, hashes.SHA512, pss=True),
}
_CURVES: Final = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}

_Verify = Callable[[bytes, bytes], None]  # (signature, signing input); raises InvalidSignature


@dataclass(frozen=True, slots=True)
class _Header:
    alg: str
    jwk: dict[str, Any]
    jkt: str
    verify: _Verify


class DpopVerifier:
    """Checks DPoP proofs for one deployment; share one instance per process.

    Every replica given the same `secret_key` accepts the others' nonces; replay protection holds
    across replicas when they share `kv`.
    """

    def __init__(
        self,
        kv: KeyValueStore,
        secret_key: bytes,
        clock: Clock,
        *,
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        max_age_seconds: float = 60,
        clock_skew_seconds: float = 5,
        nonce_lifetime_seconds: float = 300,
        nonce_required: bool = False,
    ) -> None:
        unknown = [alg for alg in algorithms if alg not in _ALGORITHMS]
        if unknown or not algorithms:
            raise ValueError(f"DPoP algorithms must be among {sorted(_ALGORITHMS)}: {unknown}")
        if len(secret_key) < MIN_SECRET_LENGTH:
            raise ValueError(f"secret_key must have at least {MIN_SECRET_LENGTH} bytes")
        if max_age_seconds <= 0 or clock_skew_seconds < 0 or nonce_lifetime_seconds <= 0:
            raise ValueError("max_age and nonce lifetime must be positive, clock skew not negative")
        self._kv = kv
        self._clock = clock
        self._algorithms = frozenset(algorithms)
        self._max_age = max_age_seconds
        self._skew = clock_skew_seconds
        self._replay_ttl = max_age_seconds + clock_skew_seconds
        self._nonce_lifetime = nonce_lifetime_seconds
        self._nonce_required = nonce_required
        # A derived key, so the configured secret may serve other purposes without collisions.
        self._nonce_key = hmac.new(secret_key, _NONCE_CONTEXT, hashlib.sha256).digest()
        self._nonce_cache: tuple[int, bytes, bytes] = (-1, b"", b"")

    @property
    def algorithms(self) -> frozenset[str]:
        """The accepted `alg` values, for `dpop_signing_alg_values_supported` (RFC 9449 §5.1)."""
        return self._algorithms

    def new_nonce(self) -> str:
        """A nonce for `DPoP-Nonce`, valid in this time window and the next (RFC 9449 §8)."""
        return self._nonces()[1].decode("ascii")

    async def verify(
        self,
        proof: str | None,
        *,
        method: str,
        url: str,
        access_token: str | None = None,
        expected_jkt: str | None = None,
    ) -> DpopProof:
        """Accept `proof` for a request of `method` to `url`, or raise a DpopError (§4.3).

        With `access_token` (a resource request, §7.1) the proof must carry its `ath`; with
        `expected_jkt` (the token's `cnf.jkt`) it must be signed by that key. The `jti` is claimed
        last, so a proof refused for another reason does not burn it.
        """
        header_segment, payload_segment, signature_segment = _split_compact(proof)
        header = _parse_header(header_segment)
        if header.alg not in self._algorithms:
            raise InvalidDpopProof(f"DPoP proof alg {header.alg!r} is not allowed")
        signature = _b64url_decode(signature_segment, "signature")
        try:
            header.verify(signature, f"{header_segment}.{payload_segment}".encode("ascii"))
        except InvalidSignature:
            raise InvalidDpopProof("DPoP proof signature is invalid") from None
        claims = _parse_claims(payload_segment)
        if expected_jkt is not None and not _same(header.jkt, expected_jkt):
            raise InvalidDpopProof("DPoP proof key does not match the key the token is bound to")
        _check_request(claims, method, url)
        self._check_iat(claims["iat"])
        if access_token is not None:
            _check_ath(claims, access_token)
        self._check_nonce(claims)
        jti: str = claims["jti"]
        claimed = await self._kv.set_if_absent(
            f"dpop:jti:{header.jkt}:{jti}", b"1", ttl_seconds=self._replay_ttl
        )
        if not claimed:
            raise InvalidDpopProof("DPoP proof replayed")
        return DpopProof(jkt=header.jkt, jti=jti, public_jwk=dict(header.jwk))

    def _check_iat(self, iat: float) -> None:
        now = self._clock.timestamp()
        if iat < now - self._max_age:
            raise InvalidDpopProof("DPoP proof is too old (iat)")
        if iat > now + self._skew:
            raise InvalidDpopProof("DPoP proof is issued in the future (iat)")

    def _check_nonce(self, claims: Mapping[str, Any]) -> None:
        nonce = claims.get("nonce")
        if nonce is None:
            if self._nonce_required:
                raise UseDpopNonce("DPoP proof must carry a server nonce", self.new_nonce())
            return
        if not isinstance(nonce, str):
            raise InvalidDpopProof("DPoP proof claim 'nonce' must be a string")
        _, current, previous = self._nonces()
        candidate = nonce.encode()
        # Both comparisons always run: the time taken reveals nothing about either nonce.
        valid = hmac.compare_digest(candidate, current) | hmac.compare_digest(candidate, previous)
        if not valid:
            raise UseDpopNonce("DPoP proof nonce is invalid or expired", self.new_nonce())

    def _nonces(self) -> tuple[int, bytes, bytes]:
        """(window, nonce of this window, nonce of the previous one), recomputed once a window."""
        window = math.floor(self._clock.timestamp() / self._nonce_lifetime)
        if self._nonce_cache[0] != window:
            self._nonce_cache = (window, self._nonce_of(window), self._nonce_of(window - 1))
        return self._nonce_cache

    def _nonce_of(self, window: int) -> bytes:
        counter = window.to_bytes(8, "big", signed=True)
        mac = hmac.new(self._nonce_key, counter, hashlib.sha256).digest()[:_NONCE_MAC_BYTES]
        return b64url_encode(counter + mac).encode("ascii")


def _split_compact(proof: str | None) -> tuple[str, str, str]:
    """The three segments of a single compact JWS (RFC 9449 §4.3 checks 1 and 2)."""
    if not proof:
        raise InvalidDpopProof("DPoP proof is missing")
    if len(proof) > MAX_PROOF_LENGTH:
        raise InvalidDpopProof("DPoP proof is too large")
    if "," in proof:
        raise InvalidDpopProof("more than one DPoP proof was sent")
    segments = proof.split(".")
    # An empty signature (alg "none") gets past here, to be refused by name for its alg.
    if len(segments) != 3 or not segments[0] or not segments[1]:
        raise InvalidDpopProof("DPoP proof is not a compact JWS (three dot-separated parts)")
    return segments[0], segments[1], segments[2]


@lru_cache(maxsize=1024)
def _parse_header(segment: str) -> _Header:
    """Parse and check a protected header and import its key; cached since clients reuse it."""
    header = _decode_json(segment, "header")
    if header.get("typ") != "dpop+jwt":
        raise InvalidDpopProof("DPoP proof typ must be 'dpop+jwt'")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in _ALGORITHMS:
        raise InvalidDpopProof(f"DPoP proof alg {alg!r} is not allowed")
    algorithm = _ALGORITHMS[alg]
    if "crit" in header:
        raise InvalidDpopProof("DPoP proof header has critical extensions this server lacks")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise InvalidDpopProof("DPoP proof header must carry the public key as 'jwk'")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise InvalidDpopProof("DPoP proof jwk contains private key material")
    if jwk.get("kty") != algorithm.kty or (algorithm.curve and jwk.get("crv") != algorithm.curve):
        raise InvalidDpopProof(f"DPoP proof jwk is not a key for alg {alg}")
    if jwk.get("alg", alg) != alg:
        raise InvalidDpopProof("DPoP proof jwk names another alg than the header")
    verify = _import_verifier(jwk, algorithm)
    return _Header(alg=alg, jwk=jwk, jkt=jwk_thumbprint(jwk), verify=verify)


def _import_verifier(jwk: dict[str, Any], algorithm: _Algorithm) -> _Verify:
    """A signature check for `algorithm` under the public key `jwk` (RFC 7518 §3, RFC 8037)."""
    try:
        if algorithm.kty == "EC":
            return _ec_verifier(jwk, algorithm)
        if algorithm.kty == "OKP":
            key = ed25519.Ed25519PublicKey.from_public_bytes(_key_member(jwk, "x", 32))
            return key.verify
        return _rsa_verifier(jwk, algorithm)
    except ValueError as exc:
        raise InvalidDpopProof(f"DPoP proof jwk is not a valid public key: {exc}") from None


def _ec_verifier(jwk: dict[str, Any], algorithm: _Algorithm) -> _Verify:
    curve = _CURVES[str(algorithm.curve)]
    size = (curve.key_size + 7) // 8
    point = b"\x04" + _key_member(jwk, "x", size) + _key_member(jwk, "y", size)
    key = ec.EllipticCurvePublicKey.from_encoded_point(curve, point)  # checks the point is on it
    assert algorithm.hash is not None
    ecdsa = ec.ECDSA(algorithm.hash())

    def verify(signature: bytes, data: bytes) -> None:
        # JWS carries R || S at fixed width (RFC 7518 §3.4); cryptography expects DER.
        if len(signature) != 2 * size:
            raise InvalidSignature
        r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
        key.verify(encode_dss_signature(r, s), data, ecdsa)

    return verify


def _rsa_verifier(jwk: dict[str, Any], algorithm: _Algorithm) -> _Verify:
    n, e = _rsa_integer(jwk, "n"), _rsa_integer(jwk, "e")
    if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
        raise ValueError(f"RSA modulus must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")
    if e.bit_length() > MAX_RSA_EXPONENT_BITS:
        raise ValueError("RSA public exponent is too large")
    key = rsa.RSAPublicNumbers(e, n).public_key()
    assert algorithm.hash is not None
    digest = algorithm.hash()
    scheme: padding.AsymmetricPadding = (
        padding.PSS(padding.MGF1(digest), salt_length=digest.digest_size)  # RFC 7518 §3.5
        if algorithm.pss
        else padding.PKCS1v15()
    )

    def verify(signature: bytes, data: bytes) -> None:
        key.verify(signature, data, scheme, digest)

    return verify


def _key_member(jwk: Mapping[str, Any], name: str, length: int | None = None) -> bytes:
    """A base64url key member in canonical form, so one key has exactly one thumbprint."""
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(f"member {name!r} must be a base64url string")
    raw = _b64url_decode(value, f"jwk member {name!r}")
    if b64url_encode(raw) != value or (length is not None and len(raw) != length):
        raise ValueError(f"member {name!r} is not a canonical encoding of the right length")
    return raw


def _rsa_integer(jwk: Mapping[str, Any], name: str) -> int:
    raw = _key_member(jwk, name)
    if not raw or raw[0] == 0:  # RFC 7518 §6.3.1: the minimum number of octets
        raise ValueError(f"member {name!r} must be encoded without leading zero octets")
    return int.from_bytes(raw, "big")


def _parse_claims(segment: str) -> dict[str, Any]:
    """The payload, with the claims of RFC 9449 §4.2 present and of the right types."""
    claims = _decode_json(segment, "payload")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise InvalidDpopProof(f"DPoP proof claim 'jti' must be a string of 1 to {MAX_JTI_LENGTH}")
    for name in ("htm", "htu"):
        if not isinstance(claims.get(name), str):
            raise InvalidDpopProof(f"DPoP proof claim {name!r} must be a string")
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
        raise InvalidDpopProof("DPoP proof claim 'iat' must be a number of seconds")
    return claims


def _check_request(claims: Mapping[str, Any], method: str, url: str) -> None:
    """`htm` is the request's method and `htu` its URI without query or fragment (§4.3)."""
    if claims["htm"] != method:
        raise InvalidDpopProof("DPoP proof htm does not match the request method")
    htu = normalized_htu(claims["htu"])
    if htu is None:
        raise InvalidDpopProof("DPoP proof htu is not an absolute http(s) URI")
    if htu != normalized_htu(url):
        raise InvalidDpopProof("DPoP proof htu does not match the request URI")


def _check_ath(claims: Mapping[str, Any], access_token: str) -> None:
    ath = claims.get("ath")
    if ath is None:
        raise InvalidDpopProof("DPoP proof must carry 'ath' with an access token")
    if not isinstance(ath, str) or not _same(ath, ath_for(access_token)):
        raise InvalidDpopProof("DPoP proof ath does not match the access token")


def _decode_json(segment: str, part: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64url_decode(segment, part))
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidDpopProof(f"DPoP proof {part} is not a JSON object") from None
    if not isinstance(value, dict):
        raise InvalidDpopProof(f"DPoP proof {part} is not a JSON object")
    return value


def _b64url_decode(segment: str, part: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2); InvalidDpopProof naming `part` otherwise."""
    try:
        return b64url_decode(segment)
    except ValueError:
        raise InvalidDpopProof(f"DPoP proof {part} is not base64url") from None


def _same(left: str, right: str) -> bool:
    """Constant-time equality of two strings of any characters."""
    return hmac.compare_digest(left.encode(), right.encode())


__all__ = [
    "DEFAULT_ALGORITHMS",
    "DpopError",
    "DpopProof",
    "DpopVerifier",
    "InvalidDpopProof",
    "UseDpopNonce",
    "ath_for",
    "jwk_thumbprint",
    "normalized_htu",
]
