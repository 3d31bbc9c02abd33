"""Validation of the keys a client registers for `private_key_jwt` (RFC 7523, RFC 7517).

Public keys only, of kinds a token endpoint can verify safely: EC P-256/P-384/P-521, Ed25519,
RSA of at least 2048 bits. A `jwks_uri` must be https (plain http only to loopback outside
production), because whoever controls it controls the client's identity.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from typing import Any
from urllib.parse import urlparse

from joserfc.errors import JoseError
from joserfc.jwk import import_key

from tabard.core.errors import InvalidField

_PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
_ACCEPTED = {("EC", "P-256"), ("EC", "P-384"), ("EC", "P-521"), ("OKP", "Ed25519"), ("RSA", None)}
MIN_RSA_BITS = 2048


def validated_jwks(keys: list[dict[str, Any]], field: str = "body.jwks.keys") -> dict[str, Any]:
    """The key set, if every key is an acceptable public key; else 422 naming the key."""
    for index, jwk in enumerate(keys):
        _check_key(jwk, f"{field}.{index}")
    kids = [jwk.get("kid") for jwk in keys]
    if len(keys) > 1 and (None in kids or len(set(kids)) != len(kids)):
        raise InvalidField(field, "with several keys, each needs its own distinct `kid`")
    return {"keys": keys}


def validated_jwks_uri(uri: str, *, production: bool, field: str = "body.jwks_uri") -> str:
    parsed = urlparse(uri)
    if parsed.scheme == "https":
        return uri
    if parsed.scheme == "http" and not production and _is_loopback(parsed.hostname or ""):
        return uri
    raise InvalidField(field, "must be https (http only to a loopback host in development)")


def _check_key(jwk: dict[str, Any], field: str) -> None:
    if _PRIVATE_MEMBERS & jwk.keys():
        raise InvalidField(field, "contains private key material; register only public keys")
    kty = jwk.get("kty")
    crv = None if kty == "RSA" else jwk.get("crv")
    if (kty, crv) not in _ACCEPTED:
        raise InvalidField(
            field, f"unsupported key type {kty}/{crv} (EC P-256/384/521, Ed25519, RSA)"
        )
    # Size first: the JOSE library warns (rather than fails) on weak RSA keys.
    if kty == "RSA" and _rsa_bits(jwk) < MIN_RSA_BITS:
        raise InvalidField(field, f"RSA keys must have at least {MIN_RSA_BITS} bits")
    try:
        import_key(jwk)
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidField(field, f"not a valid public key ({exc})") from None


def _rsa_bits(jwk: dict[str, Any]) -> int:
    modulus = jwk.get("n")
    if not isinstance(modulus, str):
        return 0
    try:
        raw = base64.urlsafe_b64decode(modulus + "=" * (-len(modulus) % 4))
    except (binascii.Error, ValueError):
        return 0
    return int.from_bytes(raw, "big").bit_length()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
