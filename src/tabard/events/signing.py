"""Webhook signatures as Standard Webhooks defines them (standardwebhooks.com), so receivers can
verify with existing libraries.

    webhook-id:        the event id (the same on every retry: de-duplicate by it)
    webhook-timestamp: Unix seconds of this attempt
    webhook-signature: "v1,<base64 HMAC-SHA256(key, f'{id}.{timestamp}.{body}')>", one per
                       secret in force, space-separated (two during a rotation's grace period)

A secret is "whsec_" + base64 of 32 random bytes; the HMAC key is those bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
_SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(_SECRET_BYTES)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(
    secrets: Sequence[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            signature(secret, message_id, timestamp, body) for secret in secrets
        ),
    }
