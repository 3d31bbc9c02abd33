"""Value-based redaction: credential-looking strings become "[REDACTED]" whatever their key.

Keys are not trusted (a field named `token` may hold a count, a field named `note` a secret), so
the decision is made on the value. Numbers and ordinary strings stay as they are.
"""

from __future__ import annotations

import re
from typing import Any

from tabard.core.ids import PUBLIC_PREFIXES, SECRET_PREFIXES

REDACTED = "[REDACTED]"

_PUBLIC = "|".join(re.escape(prefix) for prefix in PUBLIC_PREFIXES)
_CREDENTIAL_PATTERNS = (
    re.compile(r"\b(?:{})[A-Za-z0-9_\-]{{8,}}".format("|".join(map(re.escape, SECRET_PREFIXES)))),
    # Any current or future Tabard secret, except the identifiers known to be public.
    re.compile(rf"\b(?!{_PUBLIC})tbd_[a-z]+_[A-Za-z0-9_\-]{{16,}}"),
    re.compile(r"\beyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"),  # JWT / JWS
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\bBearer\s+\S+", re.IGNORECASE),
    re.compile(r"\bBasic\s+[A-Za-z0-9+/=]{8,}"),
)


def is_credential(value: str) -> bool:
    return any(pattern.search(value) for pattern in _CREDENTIAL_PATTERNS)


def redact(value: Any) -> Any:
    """A copy of `value` with every credential-looking string replaced, at any depth."""
    if isinstance(value, str):
        return REDACTED if is_credential(value) else value
    if isinstance(value, dict):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value
