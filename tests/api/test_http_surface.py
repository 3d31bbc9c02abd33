"""The HTTP surface every client meets: health, readiness, metrics, errors, headers."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from tabard.api.app import build_runtime, create_app
from tabard.core.config import Settings
from tabard.core.runtime import Runtime
from tests.conftest import ADMIN, bearer, create_org, create_org_key


class TestHealth:
    async def test_health_reports_version(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/health")
        assert response.status_code == 200
        assert response.json()["status"] == "ok"
        assert response.json()["version"]

    async def test_readyz_checks_every_dependency(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/readyz")
        assert response.status_code == 200, response.text
        checks = response.json()["checks"]
        assert set(checks) == {"database", "kv", "bus", "keystore"}
        assert all(check["status"] == "ok" for check in checks.values())

    async def test_readyz_is_503_naming_the_failed_dependency(self, settings: Settings) -> None:
        broken = settings.model_copy(
            update={"kv_backend": "redis", "redis_url": "redis://127.0.0.1:1/0"}
        )
        runtime = build_runtime(broken)
        try:
            async with _client(create_app(broken, runtime=runtime)) as http:
                response = await http.get("/readyz")
            assert response.status_code == 503
            checks = response.json()["checks"]
            assert checks["kv"]["status"] == "error"
            assert checks["database"]["status"] == "ok"
        finally:
            await runtime.kv.close()
            await runtime.bus.close()
            await runtime.database.close()

    async def test_readyz_says_draining_after_sigterm(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        runtime.draining = True
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["status"] == "draining"


def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://tabard.test")


class TestMetrics:
    async def test_metrics_use_route_templates_not_ids(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await client.get("/v1/orgs/acme", headers=ADMIN)
        await client.get("/v1/orgs/no-such-org-123", headers=ADMIN)
        body = (await client.get("/metrics")).text
        assert 'route="/v1/orgs/{org_id}"' in body
        assert "no-such-org-123" not in body
        assert "tabard_http_request_duration_seconds_bucket" in body
        assert "tabard_db_pool_size" in body
        assert "tabard_audit_chain_intact" in body
        assert "process_resident_memory_bytes" in body

    async def test_metrics_token_is_enforced_when_set(
        self, settings: Settings, runtime: Runtime
    ) -> None:
        guarded = settings.model_copy(update={"metrics_token": SecretStr("m" * 40)})
        runtime.settings = guarded
        async with _client(create_app(guarded, runtime=runtime)) as http:
            assert (await http.get("/metrics")).status_code == 401
            assert (await http.get("/metrics", headers=bearer("m" * 40))).status_code == 200


class TestErrors:
    async def test_unknown_route_is_problem_json(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/nope")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["code"] == "NOT_FOUND"
        assert body["request_id"] == response.headers["x-request-id"]

    async def test_wrong_method_is_405_problem(self, client: httpx.AsyncClient) -> None:
        response = await client.put("/health")
        assert response.status_code == 405
        assert response.json()["code"] == "METHOD_NOT_ALLOWED"

    async def test_unexpected_error_reveals_only_the_request_id(
        self, settings: Settings, runtime: Runtime
    ) -> None:
        app = create_app(settings, runtime=runtime)

        async def explode() -> None:
            raise RuntimeError("secret internal detail")

        app.add_api_route("/explode", explode)
        async with _client(app) as http:
            response = await http.get("/explode")
        assert response.status_code == 500
        assert "secret internal detail" not in response.text
        assert response.json()["request_id"] == response.headers["x-request-id"]


class TestHeaders:
    async def test_security_headers_on_every_response(self, client: httpx.AsyncClient) -> None:
        for path in ("/health", "/nope", "/v1/orgs"):
            response = await client.get(path)
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["cache-control"] == "no-store"
            assert response.headers["x-request-id"]

    async def test_hostile_request_id_is_replaced(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/health", headers={"X-Request-ID": "a b\tc" * 100})
        assert response.headers["x-request-id"] != "a b\tc" * 100
        assert len(response.headers["x-request-id"]) == 32

    async def test_cors_only_for_configured_origins(
        self, settings: Settings, runtime: Runtime
    ) -> None:
        configured = settings.model_copy(update={"cors_origins": ["https://console.example"]})
        async with _client(create_app(configured, runtime=runtime)) as http:
            allowed = await http.get("/health", headers={"Origin": "https://console.example"})
            other = await http.get("/health", headers={"Origin": "https://evil.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://console.example"
        assert "access-control-allow-origin" not in other.headers

    async def test_no_cors_by_default(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        key = await create_org_key(client, "acme")
        response = await client.get(
            "/v1/me", headers={**bearer(key), "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in response.headers
