"""The HTTP header fields that tell a client about a limit (on success and on 429).

Two vocabularies, both sent: the IETF draft (draft-ietf-httpapi-ratelimit-headers-10:
`RateLimit-Policy: "name";q=…;w=…` and `RateLimit: "name";r=…;t=…`, structured-field lists) and
the widespread `X-RateLimit-Limit/Remaining/Reset` (reset as a unix time). `Retry-After` on a
refusal is whole seconds, at least 1 (RFC 9110 section 10.2.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RateLimitHeaders = dict[str, str]


@dataclass(frozen=True, slots=True)
class Policy:
    """A limit as the draft describes it: `quota` units per `window_seconds`, named `name`.

    The name is one of ours (letters and underscores), so it needs no escaping as an sf-string.
    """

    name: str
    quota: int
    window_seconds: int


def limit_headers(
    policy: Policy, *, remaining: int, reset_after_seconds: float, now: float
) -> RateLimitHeaders:
    """Headers describing `policy` with `remaining` units left, full again after the reset time."""
    reset_after = max(0, math.ceil(reset_after_seconds))
    return {
        "X-RateLimit-Limit": str(policy.quota),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(math.ceil(now) + reset_after),
        "RateLimit-Policy": f'"{policy.name}";q={policy.quota};w={policy.window_seconds}',
        "RateLimit": f'"{policy.name}";r={remaining};t={reset_after}',
    }


def retry_after(seconds: float) -> str:
    """`Retry-After` in whole seconds, rounded up and at least 1 (0 would invite a hot loop)."""
    return str(max(1, math.ceil(seconds)))
