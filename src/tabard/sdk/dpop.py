"""DPoP proofs (RFC 9449 §4): a key the agent keeps in memory, and the proof JWT it signs for
every request — ES256 over `{typ: dpop+jwt, alg, jwk}` and `{jti, htm, htu, iat, ath?, nonce?}`.

Signed with `cryptography` directly; the server checks the same fields (`tabard.tokens.dpop`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

_COORDINATE_BYTES = 32


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class DpopKey:
    """A fresh P-256 key: its public JWK goes in every proof, its thumbprint in the token."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._clock = clock
        numbers = self._key.public_key().public_numbers()
        self.public_jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64url(numbers.x.to_bytes(_COORDINATE_BYTES, "big")),
            "y": _b64url(numbers.y.to_bytes(_COORDINATE_BYTES, "big")),
        }
        self._header = _b64url(_json({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.public_jwk}))

    @property
    def thumbprint(self) -> str:
        """RFC 7638 JWK thumbprint: what the server puts in the token's `cnf.jkt`."""
        canonical = {name: self.public_jwk[name] for name in ("crv", "kty", "x", "y")}
        return _b64url(hashlib.sha256(_json(canonical)).digest())

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
    ) -> str:
        """A proof for one request (`htu` is the URL without query and fragment, §4.2)."""
        parts = urlsplit(url)
        claims: dict[str, object] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method.upper(),
            "htu": urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
            "iat": int(self._clock()),
        }
        if access_token is not None:
            claims["ath"] = _b64url(hashlib.sha256(access_token.encode()).digest())
        if nonce is not None:
            claims["nonce"] = nonce
        signing_input = f"{self._header}.{_b64url(_json(claims))}"
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(_COORDINATE_BYTES, "big") + s.to_bytes(_COORDINATE_BYTES, "big")
        return f"{signing_input}.{_b64url(signature)}"
