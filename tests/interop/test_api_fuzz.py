"""Schemathesis generates requests from our own OpenAPI schema and sends them to a real server.

Whatever a client sends, the answer is never a 500, and every error is problem+json with a code.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.support.server import Server

pytestmark = pytest.mark.slow
ADMIN_SECRET = "fuzz-admin-secret-long-enough-for-production-0123"
ADMIN = {"Authorization": f"Bearer {ADMIN_SECRET}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    running = Server(data_dir, extra_env={"TABARD_ADMIN_SECRET": ADMIN_SECRET})
    # Something to find: ids in generated paths sometimes hit real rows.
    httpx.post(f"{running.url}/v1/orgs", json={"id": "acme", "display_name": "Acme"}, headers=ADMIN)
    yield running
    running.stop()


def test_no_input_causes_a_server_error(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        _fuzz(operation, server.url)


def _fuzz(operation: Any, base_url: str) -> None:
    """Send generated requests for one operation; fail with the request that broke a rule."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=50,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, headers=ADMIN, timeout=10)
        assert response.status_code < 500, (case.as_curl_command(), response.text)
        oauth_endpoint = operation.path in ("/oauth2/token", "/oauth2/introspect", "/oauth2/revoke")
        if response.status_code >= 400 and oauth_endpoint:
            # OAuth endpoints answer in RFC 6749 §5.2's own shape, not problem+json.
            assert response.json()["error"].islower()
        elif response.status_code >= 400:
            assert response.headers["content-type"] == ["application/problem+json"]
            problem = response.json()
            assert problem["code"].isupper()
            assert problem["status"] == response.status_code

    check()
