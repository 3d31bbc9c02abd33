"""Hashing of secrets at rest.

Random high-entropy tokens (API keys) are stored as a keyed HMAC-SHA256: a slow password hash
adds nothing against 256-bit secrets and would slow the hot path. Human-chosen or long-lived
admin secrets use argon2id, verified in a worker thread so the event loop never blocks.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_password_hasher = PasswordHasher()
# Successful verifications, as (encoded hash, keyed digest of the secret): argon2 is deterministic
# for a given pair, so a success need not be recomputed. A per-process key means the cache never
# holds a secret or anything that could be checked against one outside this process.
_VERIFIED_KEY = secrets.token_bytes(32)
_VERIFIED_LIMIT = 256
_verified: OrderedDict[tuple[str, str], None] = OrderedDict()


def keyed_digest(key: bytes, token: str) -> str:
    """HMAC-SHA256 of `token` under the server's secret key, hex encoded."""
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def argon2_hash(secret: str) -> str:
    encoded = _password_hasher.hash(secret)
    _remember(encoded, secret)
    return encoded


async def argon2_verify(encoded: str, secret: str) -> bool:
    """True when `secret` matches `encoded`; runs off the event loop, once per pair and process."""
    key = (encoded, keyed_digest(_VERIFIED_KEY, secret))
    if key in _verified:
        _verified.move_to_end(key)
        return True

    def verify() -> bool:
        try:
            return _password_hasher.verify(encoded, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    matches = await anyio.to_thread.run_sync(verify)
    if matches:
        _remember(encoded, secret)
    return matches


def _remember(encoded: str, secret: str) -> None:
    _verified[(encoded, keyed_digest(_VERIFIED_KEY, secret))] = None
    while len(_verified) > _VERIFIED_LIMIT:
        _verified.popitem(last=False)
