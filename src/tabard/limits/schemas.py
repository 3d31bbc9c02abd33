"""Limits API shapes and names."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class QuotaKind(StrEnum):
    """What a request consumes: one API call, or one issued token."""

    API_CALL = "api_call"
    TOKEN = "token"  # noqa: S105 - a kind of usage, not a secret


class QuotaName(StrEnum):
    """The tier quotas (keys of `TABARD_TIER_QUOTAS`); days and months are UTC."""

    API_CALLS_PER_DAY = "api_calls_per_day"
    TOKENS_PER_DAY = "tokens_per_day"
    TOKENS_PER_MONTH = "tokens_per_month"


class RateLimitName(StrEnum):
    TOKEN_ENDPOINT = "token_endpoint"  # noqa: S105 - a limit name, not a secret
    API = "api"
    HEARTBEAT = "heartbeat"


class QuotaUsage(BaseModel):
    name: QuotaName
    limit: int | None = Field(description="The tier's limit; null means unlimited.")
    used: int
    remaining: int | None = Field(description="What is left; null when unlimited.")
    resets_at: datetime = Field(description="When the counter starts again (UTC boundary).")


class RateLimitOut(BaseModel):
    name: RateLimitName
    per_second: float | None = Field(description="Sustained rate; null when the limit is off.")
    burst: int | None = Field(description="Requests allowed at once; null when off.")


class UsageOut(BaseModel):
    """An org's tier quotas with today's and this month's usage, and the rate limits in force."""

    org_id: str
    tier: str
    as_of: datetime
    quotas: list[QuotaUsage]
    rate_limits: list[RateLimitOut] = Field(
        description="Per client on the token endpoint and per principal on the API."
    )
