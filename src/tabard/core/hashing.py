"""Hashing of secrets at rest.

Random high-entropy tokens (API keys) are stored as a keyed HMAC-SHA256: a slow password hash
adds nothing against 256-bit secrets and would slow the hot path. Human-chosen or long-lived
admin secrets use argon2id, verified in a worker thread so the event loop never blocks.
"""

from __future__ import annotations

import hashlib
import hmac

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_password_hasher = PasswordHasher()


def keyed_digest(key: bytes, token: str) -> str:
    """HMAC-SHA256 of `token` under the server's secret key, hex encoded."""
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def argon2_hash(secret: str) -> str:
    return _password_hasher.hash(secret)


async def argon2_verify(encoded: str, secret: str) -> bool:
    """True when `secret` matches `encoded`; runs off the event loop."""

    def verify() -> bool:
        try:
            return _password_hasher.verify(encoded, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await anyio.to_thread.run_sync(verify)
