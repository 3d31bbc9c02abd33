"""Rate limits through the service functions, on the memory store and on Redis."""

from __future__ import annotations

import asyncio
import math

import pytest

from tabard.core.config import Settings, load_settings
from tabard.core.metrics import REGISTRY
from tabard.limits.errors import RateLimitExceeded
from tabard.limits.service import check_api_rate, check_token_rate
from tests.limits.conftest import Store


def limits(**overrides: float) -> Settings:
    # 5 per second sustained (one unit every 0.2 s), 3 at once.
    values: dict[str, float] = {
        "token_rate_limit_per_second": 5,
        "token_rate_limit_burst": 3,
        "api_rate_limit_per_second": 5,
        "api_rate_limit_burst": 2,
    }
    return load_settings(**{**values, **overrides})


def hits(limit: str) -> float:
    return REGISTRY.get_sample_value("tabard_rate_limit_hits_total", {"limit": limit}) or 0.0


class TestCheckTokenRate:
    async def test_burst_passes_with_headers_counting_down(self, store: Store) -> None:
        settings = limits()
        seen = [
            await check_token_rate(store.kv, settings, store.clock, "client-a") for _ in range(3)
        ]
        assert [headers["X-RateLimit-Remaining"] for headers in seen] == ["2", "1", "0"]
        assert {headers["X-RateLimit-Limit"] for headers in seen} == {"3"}
        assert {headers["RateLimit-Policy"] for headers in seen} == {'"token_endpoint";q=3;w=1'}
        assert seen[0]["RateLimit"] == '"token_endpoint";r=2;t=1'
        assert "Retry-After" not in seen[0]

    async def test_request_past_the_burst_is_429_with_retry_headers(self, store: Store) -> None:
        settings = limits()
        for _ in range(3):
            await check_token_rate(store.kv, settings, store.clock, "client-a")
        with pytest.raises(RateLimitExceeded) as raised:
            await check_token_rate(store.kv, settings, store.clock, "client-a")
        error = raised.value
        assert (error.status, error.code) == (429, "RATE_LIMIT_EXCEEDED")
        assert "token_endpoint" in error.detail
        headers = error.headers
        assert headers["Retry-After"] == "1"  # 0.2 s rounded up, never 0
        assert headers["X-RateLimit-Remaining"] == "0"
        assert headers["X-RateLimit-Limit"] == "3"
        now = store.clock.timestamp()
        assert math.ceil(now) < int(headers["X-RateLimit-Reset"]) <= math.ceil(now) + 1
        assert headers["RateLimit"] == '"token_endpoint";r=0;t=1'
        assert headers["RateLimit-Policy"] == '"token_endpoint";q=3;w=1'

    async def test_one_request_more_after_one_interval(self, store: Store) -> None:
        settings = limits()
        for _ in range(3):
            await check_token_rate(store.kv, settings, store.clock, "client-a")
        await store.sleep(0.3)
        headers = await check_token_rate(store.kv, settings, store.clock, "client-a")
        assert headers["X-RateLimit-Remaining"] == "0"
        with pytest.raises(RateLimitExceeded):
            await check_token_rate(store.kv, settings, store.clock, "client-a")

    async def test_clients_have_separate_buckets(self, store: Store) -> None:
        settings = limits()
        for _ in range(3):
            await check_token_rate(store.kv, settings, store.clock, "client-a")
        headers = await check_token_rate(store.kv, settings, store.clock, "client-b")
        assert headers["X-RateLimit-Remaining"] == "2"

    async def test_long_client_ids_keep_separate_buckets(self, store: Store) -> None:
        settings = limits()
        first, second = "x" * 5000 + "1", "x" * 5000 + "2"
        for _ in range(3):
            await check_token_rate(store.kv, settings, store.clock, first)
        with pytest.raises(RateLimitExceeded):
            await check_token_rate(store.kv, settings, store.clock, first)
        headers = await check_token_rate(store.kv, settings, store.clock, second)
        assert headers["X-RateLimit-Remaining"] == "2"

    async def test_rate_zero_turns_the_limit_off(self, store: Store) -> None:
        settings = limits(token_rate_limit_per_second=0)
        for _ in range(50):
            assert await check_token_rate(store.kv, settings, store.clock, "client-a") == {}

    async def test_refusals_are_counted_by_limit(self, store: Store) -> None:
        settings = limits()
        before_token, before_api = hits("token_endpoint"), hits("api")
        for _ in range(3):
            await check_token_rate(store.kv, settings, store.clock, "client-a")
        for _ in range(2):
            with pytest.raises(RateLimitExceeded):
                await check_token_rate(store.kv, settings, store.clock, "client-a")
        assert hits("token_endpoint") == before_token + 2
        assert hits("api") == before_api


class TestCheckApiRate:
    async def test_uses_the_api_limit_not_the_token_limit(self, store: Store) -> None:
        settings = limits(token_rate_limit_burst=10)
        for _ in range(2):
            await check_api_rate(store.kv, settings, store.clock, "org_key:k1")
        with pytest.raises(RateLimitExceeded) as raised:
            await check_api_rate(store.kv, settings, store.clock, "org_key:k1")
        assert raised.value.headers["RateLimit-Policy"] == '"api";q=2;w=1'

    async def test_principals_and_the_token_endpoint_are_separate(self, store: Store) -> None:
        settings = limits()
        for _ in range(2):
            await check_api_rate(store.kv, settings, store.clock, "agent:a1")
        await check_api_rate(store.kv, settings, store.clock, "agent:a2")
        # The same name on the token endpoint is another bucket.
        await check_token_rate(store.kv, settings, store.clock, "agent:a1")

    async def test_fractional_rates_advertise_a_longer_window(self, store: Store) -> None:
        settings = limits(api_rate_limit_per_second=0.5, api_rate_limit_burst=4)
        headers = await check_api_rate(store.kv, settings, store.clock, "admin")
        # Four at once, refilled over eight seconds: 0.5 per second.
        assert headers["RateLimit-Policy"] == '"api";q=4;w=8'
        assert headers["RateLimit"] == '"api";r=3;t=2'

    async def test_replicas_together_never_pass_the_limit(self, store: Store) -> None:
        settings = limits(api_rate_limit_per_second=0.001, api_rate_limit_burst=10)
        replicas = [store.kv, store.make_replica()]

        async def call(index: int) -> bool:
            replica = replicas[index % 2]
            try:
                await check_api_rate(replica, settings, store.clock, "org_key:shared")
            except RateLimitExceeded:
                return False
            return True

        results = await asyncio.gather(*(call(i) for i in range(100)))
        assert sum(results) == 10
