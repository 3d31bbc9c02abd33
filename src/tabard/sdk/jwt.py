"""Local verification of JWT access tokens (RFC 9068) signed with keys from a JWK Set (RFC 7517).

Pure and synchronous: no I/O, time is a parameter. Verify, then validate: the compact JWS
(RFC 7515 §7.1) is checked against an algorithm allow-list and a key chosen by `kid` from the
key set only (never a key the token brings), its signature is verified with `cryptography`,
and only then are the claims read (RFC 7519 §7.2, RFC 9068 §4).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

Reason = Literal[
    "malformed",
    "unsupported_alg",
    "unknown_kid",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
    "wrong_type",
    "missing_claim",
]
Verify = Callable[[bytes, bytes], None]  # (signature, signing input); raises TokenInvalid

# Each accepted JOSE alg and the one verification it means. "EdDSA" is the name RFC 9864
# deprecates in favour of "Ed25519"; it is accepted on input and means the same thing.
_CANONICAL_ALG = {"ES256": "ES256", "Ed25519": "Ed25519", "EdDSA": "Ed25519", "RS256": "RS256"}
SUPPORTED_ALGORITHMS = frozenset(_CANONICAL_ALG)
DEFAULT_ALGORITHMS = SUPPORTED_ALGORITHMS
MAX_TOKEN_LENGTH = 16 * 1024
MIN_RSA_BITS = 2048
BAD_SIGNATURE_MESSAGE = "token signature is invalid"

# Header parameters that carry or point at a key (RFC 7515 §4.1.2-4.1.6): trusting them would
# let the token choose the key that verifies it.
_EMBEDDED_KEY_PARAMETERS = ("jwk", "jku", "x5u", "x5c")
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_SHA256 = hashes.SHA256()
_PKCS1V15 = padding.PKCS1v15()


class TokenInvalid(Exception):
    """The token must not be accepted; `reason` is a stable snake_case code, str() a sentence."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


class UnknownKeyId(TokenInvalid):
    """No key in the set has the token's `kid`: the caller may refresh its JWKS and try again."""

    def __init__(self, kid: str) -> None:
        super().__init__("unknown_kid", "no key in the issuer's key set has the token's kid")
        self.kid = kid


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity are Python extensions


_JSON = json.JSONDecoder(parse_constant=_reject_constant)


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str
    alg: str  # the canonical alg this key verifies, from its kty/crv (and its own `alg`)
    verify: Verify


class KeySet:
    """The verification keys of one issuer, by `kid`; build it with `KeySet.from_jwks`."""

    __slots__ = ("_by_kid", "skipped")

    def __init__(self, keys: Iterable[_Key], skipped: Iterable[str] = ()) -> None:
        self._by_kid: dict[str, dict[str, _Key]] = {}
        for key in keys:
            self._by_kid.setdefault(key.kid, {}).setdefault(key.alg, key)
        self.skipped = tuple(skipped)  # why each ignored JWK was ignored, for diagnostics

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> KeySet:
        """Parse a JWK Set (RFC 7517 §5). Keys that are not for signatures (`use`, `key_ops`), of
        an unsupported kty/crv, weak or inconsistent are skipped, never fatal to the others."""
        members = jwks.get("keys") if isinstance(jwks, Mapping) else None
        if not isinstance(members, list):
            raise ValueError("a JWK Set is a JSON object with a `keys` array (RFC 7517 §5)")
        keys: list[_Key] = []
        skipped: list[str] = []
        for index, jwk in enumerate(members):
            try:
                keys.append(_parse_jwk(jwk))
            except (_Skip, ValueError, TypeError) as error:
                label = jwk.get("kid") if isinstance(jwk, Mapping) else None
                skipped.append(f"key {label or f'#{index}'}: {error}")
        return cls(keys, skipped)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._by_kid)

    def __len__(self) -> int:
        return sum(len(by_alg) for by_alg in self._by_kid.values())

    def __contains__(self, kid: object) -> bool:
        return kid in self._by_kid

    def _find(self, kid: str, alg: str) -> _Key:
        by_alg = self._by_kid.get(kid)
        if by_alg is None:
            raise UnknownKeyId(kid)
        key = by_alg.get(_CANONICAL_ALG[alg])
        if key is None:
            raise TokenInvalid("unsupported_alg", f"token alg {alg} does not fit the key it names")
        return key


def verify_jwt(
    token: str,
    keys: KeySet,
    *,
    issuer: str,
    audience: str | None,
    now: float,
    leeway_seconds: float = 30,
    typ: str | None = "at+jwt",
    algorithms: frozenset[str] = DEFAULT_ALGORITHMS,
) -> dict[str, Any]:
    """The claims of `token` once its signature verifies with a key of `keys` and its claims hold.

    `typ` (None: not checked) is compared as RFC 9068 §4 says; `exp` is required; `exp`, `nbf`
    and `iat` are checked against `now` (Unix seconds) with `leeway_seconds` of clock skew.
    Raises TokenInvalid (UnknownKeyId when the `kid` is not in `keys`).
    """
    header, claims = _verified(token, keys, algorithms)
    if typ is not None and not _same_media_type(header.get("typ"), typ):
        raise TokenInvalid("wrong_type", f"token typ is not {typ}")
    _check_issuer(claims, issuer)
    if audience is not None:
        _check_audience(claims, audience)
    _check_times(claims, now, leeway_seconds)
    return claims


def _verified(
    token: str, keys: KeySet, algorithms: frozenset[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a compact JWS whose signature verifies (RFC 7515 §5.2)."""
    if len(token) > MAX_TOKEN_LENGTH or not _COMPACT_JWS.fullmatch(token):
        raise TokenInvalid("malformed", "token is not a compact JWS of three base64url parts")
    signing_input, _, encoded_signature = token.rpartition(".")
    encoded_header, _, encoded_payload = signing_input.partition(".")
    header = _json_object(encoded_header, "header")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms or alg not in _CANONICAL_ALG:
        allowed = ", ".join(sorted(algorithms & SUPPORTED_ALGORITHMS))
        raise TokenInvalid("unsupported_alg", f"token alg is not one of {allowed}")
    _refuse_header_keys_and_extensions(header)
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise TokenInvalid("malformed", "token header has no kid")
    key = keys._find(kid, alg)
    key.verify(_b64decode(encoded_signature), signing_input.encode())
    return header, _json_object(encoded_payload, "payload")


def _refuse_header_keys_and_extensions(header: dict[str, Any]) -> None:
    for name in _EMBEDDED_KEY_PARAMETERS:
        if name in header:
            raise TokenInvalid(
                "malformed", f"token header carries `{name}`: keys come only from the issuer's JWKS"
            )
    if "crit" in header:  # RFC 7515 §4.1.11: extensions we do not understand must be refused
        raise TokenInvalid("malformed", "token header lists critical extensions (crit)")


def _es256(public_key: ec.EllipticCurvePublicKey) -> Verify:
    """ES256 signatures are the raw 32-byte r and s, concatenated (RFC 7518 §3.4)."""

    def verify(signature: bytes, signing_input: bytes) -> None:
        if len(signature) != 64:
            _bad_signature()
        r, s = int.from_bytes(signature[:32]), int.from_bytes(signature[32:])
        try:
            public_key.verify(encode_dss_signature(r, s), signing_input, _ECDSA_SHA256)
        except InvalidSignature:
            _bad_signature()

    return verify


def _ed25519(public_key: Ed25519PublicKey) -> Verify:
    """Ed25519 (RFC 8037 §3.1, RFC 9864)."""

    def verify(signature: bytes, signing_input: bytes) -> None:
        try:
            public_key.verify(signature, signing_input)
        except InvalidSignature:
            _bad_signature()

    return verify


def _rs256(public_key: rsa.RSAPublicKey) -> Verify:
    """RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3)."""

    def verify(signature: bytes, signing_input: bytes) -> None:
        try:
            public_key.verify(signature, signing_input, _PKCS1V15, _SHA256)
        except InvalidSignature:
            _bad_signature()

    return verify


def _bad_signature() -> NoReturn:
    raise TokenInvalid("bad_signature", BAD_SIGNATURE_MESSAGE)


def _same_media_type(value: object, expected: str) -> bool:
    """`typ` equality as RFC 7515 §4.1.9 and RFC 9068 §4 define it: case-insensitive, with or
    without the "application/" prefix."""
    if not isinstance(value, str):
        return False
    return value.lower().removeprefix("application/") == expected.lower().removeprefix(
        "application/"
    )


def _check_issuer(claims: dict[str, Any], issuer: str) -> None:
    value = claims.get("iss")
    if value is None:
        raise TokenInvalid("missing_claim", "token has no iss claim")
    if value != issuer:
        raise TokenInvalid("wrong_issuer", f"token was not issued by {issuer}")


def _check_audience(claims: dict[str, Any], audience: str) -> None:
    """`aud` is one string or an array of strings, and must name us (RFC 7519 §4.1.3)."""
    value = claims.get("aud")
    if value is None:
        raise TokenInvalid("missing_claim", "token has no aud claim")
    if value != audience and not (isinstance(value, list) and audience in value):
        raise TokenInvalid("wrong_audience", f"token is not meant for {audience}")


def _check_times(claims: dict[str, Any], now: float, leeway: float) -> None:
    expires = _numeric_date(claims, "exp")
    if expires is None:
        raise TokenInvalid("missing_claim", "token has no exp claim")
    if expires <= now - leeway:
        raise TokenInvalid("expired", "token has expired")
    for name in ("nbf", "iat"):
        moment = _numeric_date(claims, name)
        if moment is not None and moment > now + leeway:
            raise TokenInvalid("not_yet_valid", f"token {name} is in the future")


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    """A NumericDate claim (RFC 7519 §2): a JSON number, never a bool or a string."""
    value = claims.get(name)
    if value is None:
        return None
    if type(value) not in (int, float):
        raise TokenInvalid("malformed", f"token {name} claim is not a number")
    return float(value)


def _b64decode(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error:
        raise TokenInvalid("malformed", "token part is not base64url") from None


def _json_object(segment: str, part: str) -> dict[str, Any]:
    try:
        value = _JSON.decode(_b64decode(segment).decode())
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser allows
        raise TokenInvalid("malformed", f"token {part} is not JSON") from None
    if not isinstance(value, dict):
        raise TokenInvalid("malformed", f"token {part} is not a JSON object")
    return value


class _Skip(Exception):
    """This JWK cannot verify any token we accept."""


def _parse_jwk(jwk: object) -> _Key:
    if not isinstance(jwk, Mapping):
        raise _Skip("not a JSON object")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _Skip("no kid, so no token could select it")
    if jwk.get("use", "sig") != "sig":
        raise _Skip(f"use is {jwk.get('use')!r}, not 'sig'")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise _Skip("key_ops does not include 'verify'")
    alg, verify = _verifier(jwk)
    declared = jwk.get("alg")
    if declared is not None and _CANONICAL_ALG.get(declared) != alg:
        raise _Skip(f"alg {declared!r} is not supported for this key type")
    return _Key(kid=kid, alg=alg, verify=verify)


def _verifier(jwk: Mapping[str, Any]) -> tuple[str, Verify]:
    """The canonical alg the key's kty/crv verifies, and its check (RFC 7518 §6, RFC 8037 §2)."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "EC" and crv == "P-256":
        x, y = _key_bytes(jwk, "x", 32), _key_bytes(jwk, "y", 32)
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x), int.from_bytes(y), ec.SECP256R1()
        )
        return "ES256", _es256(numbers.public_key())  # ValueError for a point off the curve
    if kty == "OKP" and crv == "Ed25519":
        return "Ed25519", _ed25519(Ed25519PublicKey.from_public_bytes(_key_bytes(jwk, "x", 32)))
    if kty == "RSA":
        n, e = int.from_bytes(_key_bytes(jwk, "n")), int.from_bytes(_key_bytes(jwk, "e"))
        if n.bit_length() < MIN_RSA_BITS:
            raise _Skip(f"RSA modulus shorter than {MIN_RSA_BITS} bits")
        return "RS256", _rs256(rsa.RSAPublicNumbers(e, n).public_key())
    raise _Skip(f"kty {kty!r} / crv {crv!r} is not supported")


def _key_bytes(jwk: Mapping[str, Any], name: str, length: int | None = None) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", value):
        raise _Skip(f"member {name} is not base64url")
    decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    if length is not None and len(decoded) != length:
        raise _Skip(f"member {name} is not {length} bytes")
    return decoded
