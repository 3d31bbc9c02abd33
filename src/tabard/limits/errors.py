"""Limits errors: 429 with the headers that say when to come back."""

from __future__ import annotations

from tabard.core.errors import TabardError
from tabard.limits.headers import RateLimitHeaders


class RateLimitExceeded(TabardError):
    """Too many requests in a short time (a rate limit); `headers` carry `Retry-After`."""

    status = 429
    code = "RATE_LIMIT_EXCEEDED"
    title = "Rate limit exceeded"

    def __init__(self, detail: str, headers: RateLimitHeaders) -> None:
        super().__init__(detail)
        self.headers.update(headers)


class TierLimitExceeded(TabardError):
    """The org used up a quota of its tier; the `limit` extension names it (`tokens_per_day`)."""

    status = 429
    code = "TIER_LIMIT_EXCEEDED"
    title = "Tier limit exceeded"

    def __init__(self, limit: str, detail: str, headers: RateLimitHeaders) -> None:
        super().__init__(detail, limit=limit)
        self.limit = limit
        self.headers.update(headers)
