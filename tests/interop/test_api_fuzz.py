"""Schemathesis generates requests from our own OpenAPI schema and sends them to a real server.

Whatever a client sends, the answer is never a 500, and every error is problem+json with a code.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.support.server import Server

pytestmark = pytest.mark.slow
ADMIN_SECRET = "fuzz-admin-secret-long-enough-for-production-0123"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    running = Server(data_dir, extra_env={"TABARD_ADMIN_SECRET": ADMIN_SECRET})
    admin = {"Authorization": f"Bearer {ADMIN_SECRET}"}
    # Something to find: ids in generated paths sometimes hit real rows.
    httpx.post(f"{running.url}/v1/orgs", json={"id": "acme", "display_name": "Acme"}, headers=admin)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api_schema(server: Server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_input_causes_a_server_error(case: schemathesis.Case, server: Server) -> None:
    response = case.call(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_SECRET}"}, timeout=10
    )
    assert response.status_code < 500, (case.as_curl_command(), response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"] == ["application/problem+json"]
        problem = response.json()
        assert problem["code"].isupper()
        assert problem["status"] == response.status_code
