"""Tier quotas through the service functions: UTC days and months, refusals, usage."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from tabard.core.config import ConfigError, Settings, load_settings
from tabard.core.metrics import REGISTRY
from tabard.limits.errors import TierLimitExceeded
from tabard.limits.schemas import QuotaKind, QuotaName
from tabard.limits.service import COUNTER_SLACK_SECONDS, consume_quota, usage
from tests.limits.conftest import Store

# The store fixture's clock starts at 2026-01-31 23:00 UTC: one hour before a new day and month.
MIDNIGHT = datetime(2026, 2, 1, tzinfo=UTC)
API_CALL, TOKEN = QuotaKind.API_CALL, QuotaKind.TOKEN


def quotas(api_calls: int | None = 3, day: int | None = 5, month: int | None = 7) -> Settings:
    limits = {"api_calls_per_day": api_calls, "tokens_per_day": day, "tokens_per_month": month}
    return load_settings(tier_quotas={"free": limits})


async def consume(store: Store, settings: Settings, kind: QuotaKind, org: str = "acme") -> None:
    await consume_quota(store.kv, settings, store.clock, org, "free", kind)


async def used(store: Store, settings: Settings, org: str = "acme") -> dict[str, int]:
    report = await usage(store.kv, settings, store.clock, org, "free")
    return {quota.name.value: quota.used for quota in report.quotas}


def rejections(limit: str) -> float:
    sample = REGISTRY.get_sample_value("tabard_tier_limit_rejections_total", {"limit": limit})
    return sample or 0.0


class TestConsumeQuota:
    async def test_api_calls_up_to_the_limit_then_429_naming_it(self, store: Store) -> None:
        settings = quotas()
        for _ in range(3):
            await consume(store, settings, API_CALL)
        with pytest.raises(TierLimitExceeded) as raised:
            await consume(store, settings, API_CALL)
        error = raised.value
        assert (error.status, error.code) == (429, "TIER_LIMIT_EXCEEDED")
        assert error.extensions == {"limit": "api_calls_per_day"}
        assert "api_calls_per_day" in error.detail

    async def test_refusal_headers_point_at_the_utc_boundary(self, store: Store) -> None:
        settings = quotas()
        for _ in range(3):
            await consume(store, settings, API_CALL)
        with pytest.raises(TierLimitExceeded) as raised:
            await consume(store, settings, API_CALL)
        headers = raised.value.headers
        assert headers["Retry-After"] == "3600"
        assert headers["X-RateLimit-Reset"] == str(int(MIDNIGHT.timestamp()))
        assert headers["X-RateLimit-Limit"] == "3"
        assert headers["X-RateLimit-Remaining"] == "0"
        assert headers["RateLimit-Policy"] == '"api_calls_per_day";q=3;w=86400'
        assert headers["RateLimit"] == '"api_calls_per_day";r=0;t=3600'

    async def test_a_refused_request_consumes_nothing(self, store: Store) -> None:
        settings = quotas()
        for _ in range(3):
            await consume(store, settings, API_CALL)
        for _ in range(4):
            with pytest.raises(TierLimitExceeded):
                await consume(store, settings, API_CALL)
        assert (await used(store, settings))["api_calls_per_day"] == 3

    async def test_a_new_utc_day_starts_from_zero(self, store: Store) -> None:
        settings = quotas()
        for _ in range(3):
            await consume(store, settings, API_CALL)
        store.clock.advance(3599)
        with pytest.raises(TierLimitExceeded):
            await consume(store, settings, API_CALL)
        store.clock.advance(1)  # 00:00:00 UTC
        await consume(store, settings, API_CALL)
        assert (await used(store, settings))["api_calls_per_day"] == 1

    async def test_tokens_count_against_the_day_and_the_month(self, store: Store) -> None:
        settings = quotas(day=5, month=7)
        for _ in range(5):
            await consume(store, settings, TOKEN)
        with pytest.raises(TierLimitExceeded) as by_day:
            await consume(store, settings, TOKEN)
        assert by_day.value.limit == "tokens_per_day"
        store.clock.advance(3600 * 24 * 3)  # into February: day and month both new
        assert await used(store, settings) == {
            "api_calls_per_day": 0,
            "tokens_per_day": 0,
            "tokens_per_month": 0,
        }

    async def test_monthly_limit_spans_days_and_refuses_without_counting(
        self, store: Store
    ) -> None:
        settings = quotas(day=5, month=7)
        store.clock.advance(3600 * 2)  # 2026-02-01 01:00
        for _ in range(5):
            await consume(store, settings, TOKEN)
        store.clock.advance(3600 * 24)  # 2026-02-02: a new day, the same month
        for _ in range(2):
            await consume(store, settings, TOKEN)
        with pytest.raises(TierLimitExceeded) as by_month:
            await consume(store, settings, TOKEN)
        error = by_month.value
        assert error.extensions == {"limit": "tokens_per_month"}
        march = datetime(2026, 3, 1, tzinfo=UTC)
        assert error.headers["X-RateLimit-Reset"] == str(int(march.timestamp()))
        assert error.headers["RateLimit-Policy"] == '"tokens_per_month";q=7;w=2419200'
        # The refused token raised the day counter first; it was lowered again.
        assert await used(store, settings) == {
            "api_calls_per_day": 0,
            "tokens_per_day": 2,
            "tokens_per_month": 7,
        }

    async def test_api_calls_and_tokens_are_counted_apart(self, store: Store) -> None:
        settings = quotas()
        for _ in range(3):
            await consume(store, settings, API_CALL)
        await consume(store, settings, TOKEN)
        assert await used(store, settings) == {
            "api_calls_per_day": 3,
            "tokens_per_day": 1,
            "tokens_per_month": 1,
        }

    async def test_orgs_are_counted_apart(self, store: Store) -> None:
        settings = quotas()
        for _ in range(3):
            await consume(store, settings, API_CALL, org="acme")
        await consume(store, settings, API_CALL, org="globex")
        assert (await used(store, settings, "globex"))["api_calls_per_day"] == 1

    async def test_a_zero_limit_refuses_everything(self, store: Store) -> None:
        settings = quotas(api_calls=0)
        with pytest.raises(TierLimitExceeded):
            await consume(store, settings, API_CALL)
        assert (await used(store, settings))["api_calls_per_day"] == 0

    async def test_unlimited_quotas_still_count_usage(self, store: Store) -> None:
        settings = load_settings()
        for _ in range(20):
            await consume_quota(store.kv, settings, store.clock, "bigco", "enterprise", TOKEN)
        report = await usage(store.kv, settings, store.clock, "bigco", "enterprise")
        tokens = {quota.name: quota for quota in report.quotas}[QuotaName.TOKENS_PER_DAY]
        assert (tokens.limit, tokens.used, tokens.remaining) == (None, 20, None)

    async def test_a_tier_without_quotas_is_unlimited(self, store: Store) -> None:
        settings = quotas()
        for _ in range(10):
            await consume_quota(store.kv, settings, store.clock, "acme", "platinum", API_CALL)

    async def test_concurrent_requests_never_pass_the_limit(self, store: Store) -> None:
        settings = quotas(day=10, month=100)
        replicas = [store.kv, store.make_replica()]

        async def take(index: int) -> bool:
            try:
                await consume_quota(
                    replicas[index % 2], settings, store.clock, "acme", "free", TOKEN
                )
            except TierLimitExceeded:
                return False
            return True

        results = await asyncio.gather(*(take(i) for i in range(40)))
        assert sum(results) == 10
        assert (await used(store, settings))["tokens_per_month"] == 10

    async def test_counters_expire_after_their_period_plus_slack(self, store: Store) -> None:
        settings = quotas()
        await consume(store, settings, TOKEN)
        day_ttl = await store.kv.ttl("quota:acme:tokens_per_day:2026-01-31")
        month_ttl = await store.kv.ttl("quota:acme:tokens_per_month:2026-01")
        assert day_ttl is not None
        assert month_ttl is not None
        assert 3600 < day_ttl <= 3600 + COUNTER_SLACK_SECONDS
        assert 3600 < month_ttl <= 3600 + COUNTER_SLACK_SECONDS

    async def test_rejections_are_counted_by_limit(self, store: Store) -> None:
        settings = quotas(day=1)
        before = rejections("tokens_per_day"), rejections("api_calls_per_day")
        await consume(store, settings, TOKEN)
        for _ in range(3):
            with pytest.raises(TierLimitExceeded):
                await consume(store, settings, TOKEN)
        assert (rejections("tokens_per_day"), rejections("api_calls_per_day")) == (
            before[0] + 3,
            before[1],
        )


class TestUsage:
    async def test_reports_limits_usage_remaining_and_resets(self, store: Store) -> None:
        settings = quotas()
        await consume(store, settings, API_CALL)
        report = await usage(store.kv, settings, store.clock, "acme", "free")
        assert (report.org_id, report.tier, report.as_of) == ("acme", "free", store.clock.now())
        rows = {quota.name.value: quota for quota in report.quotas}
        calls = rows["api_calls_per_day"]
        assert (calls.limit, calls.used, calls.remaining) == (3, 1, 2)
        assert calls.resets_at == MIDNIGHT
        assert rows["tokens_per_month"].resets_at == MIDNIGHT  # 2026-01 ends at the same moment

    async def test_reports_the_rate_limits_in_force(self, store: Store) -> None:
        settings = load_settings(token_rate_limit_per_second=0, api_rate_limit_burst=7)
        report = await usage(store.kv, settings, store.clock, "acme", "free")
        rates = {limit.name.value: limit for limit in report.rate_limits}
        assert (rates["token_endpoint"].per_second, rates["token_endpoint"].burst) == (None, None)
        assert rates["api"].burst == 7


class TestTierQuotaSettings:
    def test_defaults_cover_every_tier(self) -> None:
        settings = load_settings()
        assert set(settings.tier_quotas) >= {"free", "pro", "enterprise"}
        assert settings.tier_quotas["enterprise"] == dict.fromkeys(
            ("api_calls_per_day", "tokens_per_day", "tokens_per_month")
        )

    def test_overrides_merge_over_the_defaults_per_limit(self) -> None:
        defaults = load_settings().tier_quotas
        settings = load_settings(tier_quotas={"free": {"tokens_per_day": 5}})
        assert settings.tier_quotas["free"] == {**defaults["free"], "tokens_per_day": 5}
        assert settings.tier_quotas["pro"] == defaults["pro"]

    def test_environment_json_is_read(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TABARD_TIER_QUOTAS", '{"pro": {"api_calls_per_day": null}}')
        assert load_settings().tier_quotas["pro"]["api_calls_per_day"] is None

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ({"free": {"calls": 1}}, "unknown limit ['calls']"),
            ({"free": {"tokens_per_day": -1}}, "limits must be >= 0 or null"),
            ({"free": {"tokens_per_day": "many"}}, "TABARD_TIER_QUOTAS"),
        ],
    )
    def test_bad_quotas_are_refused_at_start(self, value: Any, message: str) -> None:
        with pytest.raises(ConfigError) as raised:
            load_settings(tier_quotas=value)
        assert message in str(raised.value)

    @pytest.mark.parametrize(
        "setting",
        [
            {"api_rate_limit_per_second": -1},
            {"token_rate_limit_burst": 0},
        ],
    )
    def test_bad_rate_limits_are_refused_at_start(self, setting: dict[str, float]) -> None:
        with pytest.raises(ConfigError):
            load_settings(**setting)
