"""The token endpoint is served past FastAPI's router, yet keeps everything our middleware adds:
request id, security headers, route-labelled metrics; domain errors stay problem+json."""

from __future__ import annotations

import httpx

from tests.tokens.support import agent_client, request_token


class TestHotTokenRoute:
    async def test_keeps_request_id_security_headers_and_metrics(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await agent_client(client)
        response = await request_token(client, agent, headers={"X-Request-ID": "hot-route-1"})
        assert response.status_code == 200, response.text
        assert response.headers["x-request-id"] == "hot-route-1"
        assert response.headers["x-content-type-options"] == "nosniff"
        metrics = (await client.get("/metrics")).text
        assert 'route="/oauth2/token"' in metrics

    async def test_an_unknown_method_still_reaches_the_router(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/oauth2/token")
        assert response.status_code == 405
        assert response.headers["content-type"] == "application/problem+json"
