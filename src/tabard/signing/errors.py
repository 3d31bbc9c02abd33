"""Signing-key errors."""

from __future__ import annotations

from tabard.core.errors import ServiceUnavailable


class SigningKeyUnavailable(ServiceUnavailable):
    """The stored signing key does not open with the configured master key (a bad restore)."""

    code = "SIGNING_KEY_UNAVAILABLE"
    title = "The signing key cannot be opened"
