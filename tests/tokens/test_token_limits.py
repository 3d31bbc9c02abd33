"""The token endpoint's rate limit (per client, GCRA) and the tier quota of tokens per day, through
the real app: 429 problems with `Retry-After` and the rate-limit headers.

Settings here: 3 token requests at once per client, refilled at one per 100 s; the `pro` tier
may issue 2 tokens a day (`free` keeps its default). The memory store runs on the test's frozen
clock, so `clock.advance` refills buckets and crosses UTC days; on Redis only real time refills.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
import pytest
import redis.asyncio as aioredis

from tabard.api.app import build_runtime, create_app
from tabard.core.clock import FrozenClock
from tabard.core.config import Settings, load_settings
from tabard.core.kv import create_kv
from tests.conftest import ADMIN
from tests.tokens.support import AgentClient, agent_client, request_token

BURST = 3
REFILL_SECONDS = 100
PRO_TOKENS_PER_DAY = 2


@pytest.fixture
def settings(settings: Settings) -> Settings:
    quotas = load_settings(tier_quotas={"pro": {"tokens_per_day": PRO_TOKENS_PER_DAY}})
    return settings.model_copy(
        update={
            "token_rate_limit_per_second": 1 / REFILL_SECONDS,
            "token_rate_limit_burst": BURST,
            "tier_quotas": quotas.tier_quotas,
        }
    )


async def pro_agent(client: httpx.AsyncClient, org_id: str = "bigco") -> AgentClient:
    body = {"id": org_id, "display_name": org_id.title(), "tier": "pro"}
    assert (await client.post("/v1/orgs", json=body, headers=ADMIN)).status_code == 201
    return await agent_client(client, org_id, create_org_too=False)


async def tokens_used_today(client: httpx.AsyncClient, org_id: str) -> int:
    usage = (await client.get(f"/v1/orgs/{org_id}/usage", headers=ADMIN)).json()
    [quota] = [quota for quota in usage["quotas"] if quota["name"] == "tokens_per_day"]
    used: int = quota["used"]
    return used


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, object] = response.json()
    assert (body["status"], body["code"]) == (status, code)
    return body


async def use_up_burst(client: httpx.AsyncClient, agent: AgentClient) -> list[httpx.Response]:
    responses = [await request_token(client, agent) for _ in range(BURST)]
    assert [response.status_code for response in responses] == [200] * BURST
    return responses


class TestTokenRateLimit:
    async def test_headers_count_down_through_the_burst(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        responses = await use_up_burst(client, agent)
        assert [r.headers["x-ratelimit-remaining"] for r in responses] == ["2", "1", "0"]
        assert {r.headers["x-ratelimit-limit"] for r in responses} == {str(BURST)}
        assert all("retry-after" not in r.headers for r in responses)

    async def test_request_past_the_burst_is_429_rate_limit_exceeded(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await agent_client(client)
        await use_up_burst(client, agent)
        response = await request_token(client, agent)
        body = assert_problem(response, 429, "RATE_LIMIT_EXCEEDED")
        assert "token_endpoint" in str(body["detail"])
        headers = response.headers
        assert int(headers["retry-after"]) == REFILL_SECONDS
        assert headers["x-ratelimit-limit"] == str(BURST)
        assert headers["x-ratelimit-remaining"] == "0"
        now = math.ceil(clock.timestamp())
        assert now < int(headers["x-ratelimit-reset"]) <= now + BURST * REFILL_SECONDS
        assert headers["ratelimit"].startswith('"token_endpoint";r=0;t=')
        assert headers["ratelimit-policy"].startswith(f'"token_endpoint";q={BURST};')

    async def test_another_client_is_unaffected(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        other = await agent_client(client, name="other-bot", create_org_too=False)
        await use_up_burst(client, agent)
        assert (await request_token(client, agent)).status_code == 429
        response = await request_token(client, other)
        assert response.status_code == 200, response.text
        assert response.headers["x-ratelimit-remaining"] == str(BURST - 1)

    async def test_client_gets_through_after_retry_after(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await agent_client(client)
        await use_up_burst(client, agent)
        refused = await request_token(client, agent)
        clock.advance(int(refused.headers["retry-after"]))
        assert (await request_token(client, agent)).status_code == 200
        assert (await request_token(client, agent)).status_code == 429

    async def test_refused_requests_issue_nothing(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        await use_up_burst(client, agent)
        for _ in range(2):
            assert (await request_token(client, agent)).status_code == 429
        assert await tokens_used_today(client, "acme") == BURST
        issued = await client.get(
            "/v1/audit", params={"org": "acme", "action": "token.issued"}, headers=ADMIN
        )
        assert len(issued.json()["items"]) == BURST


class TestTokensPerDay:
    async def test_token_past_the_tier_quota_is_429_naming_the_limit(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await pro_agent(client)
        for _ in range(PRO_TOKENS_PER_DAY):
            assert (await request_token(client, agent)).status_code == 200
        response = await request_token(client, agent)
        body = assert_problem(response, 429, "TIER_LIMIT_EXCEEDED")
        assert body["limit"] == "tokens_per_day"
        assert "tokens_per_day" in str(body["detail"])
        midnight = (clock.now() + timedelta(days=1)).replace(hour=0, minute=0, second=0)
        seconds_left = (midnight - clock.now()).total_seconds()
        assert int(response.headers["retry-after"]) == max(1, math.ceil(seconds_left))
        assert response.headers["x-ratelimit-limit"] == str(PRO_TOKENS_PER_DAY)
        assert response.headers["x-ratelimit-remaining"] == "0"

    async def test_refusal_takes_nothing_from_the_quota(self, client: httpx.AsyncClient) -> None:
        agent = await pro_agent(client)
        for _ in range(PRO_TOKENS_PER_DAY + 1):
            await request_token(client, agent)
        assert await tokens_used_today(client, "bigco") == PRO_TOKENS_PER_DAY

    async def test_quota_is_the_orgs_across_its_agents(self, client: httpx.AsyncClient) -> None:
        first = await pro_agent(client)
        second = await agent_client(client, "bigco", "second-bot", create_org_too=False)
        for _ in range(PRO_TOKENS_PER_DAY):
            assert (await request_token(client, first)).status_code == 200
        response = await request_token(client, second)
        assert_problem(response, 429, "TIER_LIMIT_EXCEEDED")

    async def test_other_orgs_are_unaffected(self, client: httpx.AsyncClient) -> None:
        agent = await pro_agent(client)
        other = await agent_client(client)  # free tier, default quota
        for _ in range(PRO_TOKENS_PER_DAY + 1):
            await request_token(client, agent)
        assert (await request_token(client, other)).status_code == 200

    async def test_next_utc_day_starts_from_zero(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await pro_agent(client)
        for _ in range(PRO_TOKENS_PER_DAY + 1):
            await request_token(client, agent)
        midnight = (clock.now() + timedelta(days=1)).replace(hour=0, minute=0, second=0)
        clock.advance((midnight - clock.now()).total_seconds() + 1)
        assert (await request_token(client, agent)).status_code == 200
        assert await tokens_used_today(client, "bigco") == 1


@asynccontextmanager
async def replica(
    settings: Settings, clock: FrozenClock, redis_url: str, namespace: str
) -> AsyncIterator[httpx.AsyncClient]:
    """Another Tabard process over the same database, sharing one Redis namespace."""
    runtime = build_runtime(
        settings, clock=clock, kv=create_kv("redis", redis_url, clock, namespace)
    )
    transport = httpx.ASGITransport(app=create_app(settings, runtime=runtime))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://tabard.test") as http:
            yield http
    finally:
        await runtime.kv.close()
        await runtime.bus.close()
        await runtime.database.close()


@pytest.mark.redis
async def test_rate_limit_holds_across_replicas_sharing_redis(
    client: httpx.AsyncClient, settings: Settings, clock: FrozenClock, redis_url: str
) -> None:
    agent = await agent_client(client)
    namespace = f"test-token-limits-{uuid.uuid4().hex}"
    try:
        async with (
            replica(settings, clock, redis_url, namespace) as one,
            replica(settings, clock, redis_url, namespace) as two,
        ):
            statuses = [(await request_token(http, agent)).status_code for http in (one, two, one)]
            assert statuses == [200] * BURST
            assert (await request_token(two, agent)).status_code == 429
            assert (await request_token(one, agent)).status_code == 429
    finally:
        connection = aioredis.Redis.from_url(redis_url)
        keys = [key async for key in connection.scan_iter(match=f"{namespace}:*")]
        if keys:
            await connection.delete(*keys)
        await connection.aclose()
