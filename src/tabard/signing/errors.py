"""Signing-key errors."""

from __future__ import annotations

from tabard.core.errors import Conflict, ServiceUnavailable


class SigningKeyUnavailable(ServiceUnavailable):
    """The stored signing key does not open with the configured master key (a bad restore)."""

    code = "SIGNING_KEY_UNAVAILABLE"
    title = "The signing key cannot be opened"


class SigningKeyRotationConflict(Conflict):
    """Another rotation (or the first key's creation) committed while this one was running."""

    code = "SIGNING_KEY_ROTATION_CONFLICT"
    title = "Another signing-key rotation happened at the same time"
