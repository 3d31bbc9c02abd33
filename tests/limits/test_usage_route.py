"""`GET /v1/orgs/{org}/usage` over HTTP, and how a 429 from the limits reaches the client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from fastapi import Request

from tabard.api.app import create_app
from tabard.core.clock import FrozenClock
from tabard.core.config import load_settings
from tabard.core.runtime import Runtime, get_runtime
from tabard.limits.schemas import QuotaKind
from tabard.limits.service import check_api_rate, consume_quota
from tests.conftest import ADMIN, bearer, create_org, create_org_key


def by_name(body: dict[str, object]) -> dict[str, dict[str, object]]:
    quotas = body["quotas"]
    assert isinstance(quotas, list)
    return {quota["name"]: quota for quota in quotas}


class TestGetUsage:
    async def test_admin_sees_the_org_tier_limits_and_usage(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        for _ in range(2):
            await consume_quota(
                runtime.kv, runtime.settings, runtime.clock, "acme", "free", QuotaKind.TOKEN
            )
        response = await client.get("/v1/orgs/acme/usage", headers=ADMIN)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["org_id"], body["tier"]) == ("acme", "free")
        limit = runtime.settings.tier_quotas["free"]["tokens_per_day"]
        assert limit is not None
        tokens = by_name(body)["tokens_per_day"]
        assert (tokens["limit"], tokens["used"], tokens["remaining"]) == (limit, 2, limit - 2)
        next_midnight = (clock.now() + timedelta(days=1)).date().isoformat()
        assert str(tokens["resets_at"]).startswith(next_midnight)
        assert by_name(body)["api_calls_per_day"]["used"] == 0
        names = {limit["name"] for limit in body["rate_limits"]}
        assert names == {"token_endpoint", "api", "heartbeat"}

    async def test_the_orgs_own_key_may_read_it(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        key = await create_org_key(client, "acme")
        response = await client.get("/v1/orgs/acme/usage", headers=bearer(key))
        assert response.status_code == 200
        assert response.json()["org_id"] == "acme"

    async def test_limits_follow_the_orgs_current_tier(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        patched = await client.patch("/v1/orgs/acme", json={"tier": "enterprise"}, headers=ADMIN)
        assert patched.status_code == 200
        body = (await client.get("/v1/orgs/acme/usage", headers=ADMIN)).json()
        assert body["tier"] == "enterprise"
        assert {quota["limit"] for quota in body["quotas"]} == {None}

    async def test_another_orgs_key_gets_404(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        globex_key = await create_org_key(client, "globex")
        response = await client.get("/v1/orgs/acme/usage", headers=bearer(globex_key))
        assert response.status_code == 404
        assert response.json()["code"] == "ORG_NOT_FOUND"

    async def test_unknown_org_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/orgs/nobody/usage", headers=ADMIN)
        assert response.status_code == 404
        assert response.json()["code"] == "ORG_NOT_FOUND"

    async def test_anonymous_caller_is_401(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        response = await client.get("/v1/orgs/acme/usage")
        assert response.status_code == 401


@pytest.fixture
async def limited_client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The real app plus one route that applies the API rate limit or a one-call daily quota."""
    app = create_app(runtime.settings, runtime=runtime)
    one_call_a_day = load_settings(tier_quotas={"free": {"api_calls_per_day": 1}})

    @app.get("/limited/{kind}")
    async def limited(kind: str, request: Request) -> dict[str, str]:
        rt = get_runtime(request)
        if kind == "rate":
            await check_api_rate(rt.kv, rt.settings, rt.clock, "org_key:k1")
        else:
            await consume_quota(rt.kv, one_call_a_day, rt.clock, "acme", "free", QuotaKind.API_CALL)
        return {"ok": kind}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tabard.test") as http:
        yield http


class TestTooManyRequests:
    async def test_rate_limit_is_a_problem_with_retry_headers(
        self, limited_client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        burst = runtime.settings.api_rate_limit_burst
        for _ in range(burst):
            assert (await limited_client.get("/limited/rate")).status_code == 200
        response = await limited_client.get("/limited/rate")
        assert response.status_code == 429
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "RATE_LIMIT_EXCEEDED"
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["x-ratelimit-remaining"] == "0"
        assert response.headers["x-ratelimit-limit"] == str(burst)
        assert int(response.headers["x-ratelimit-reset"]) >= int(runtime.clock.timestamp())
        assert response.headers["ratelimit"].startswith('"api";r=0;t=')
        assert response.headers["ratelimit-policy"].startswith(f'"api";q={burst};w=')

    async def test_tier_limit_is_a_problem_naming_the_limit(
        self, limited_client: httpx.AsyncClient
    ) -> None:
        assert (await limited_client.get("/limited/quota")).status_code == 200
        response = await limited_client.get("/limited/quota")
        assert response.status_code == 429
        problem = response.json()
        assert (problem["code"], problem["limit"]) == ("TIER_LIMIT_EXCEEDED", "api_calls_per_day")
        assert "api_calls_per_day" in problem["detail"]
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["ratelimit-policy"] == '"api_calls_per_day";q=1;w=86400'
