"""Assertions shared by the token-endpoint tests: RFC 6749 §5.2 error shapes and audited denials."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.conftest import ADMIN

# RFC 6749 §5.2: error_description is limited to %x20-21 / %x23-5B / %x5D-7E (no `"` or `\`).
_DESCRIPTION = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]+")


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> str:
    """`response` is exactly an RFC 6749 §5.2 error; returns its description."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == error, body
    description: str = body["error_description"]
    assert _DESCRIPTION.fullmatch(description), description
    return description


def assert_invalid_client(response: httpx.Response) -> None:
    """RFC 6749 §5.2: 401 `invalid_client` with a `WWW-Authenticate` challenge."""
    assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic realm=")


async def token_denials(
    client: httpx.AsyncClient, org_id: str | None = None
) -> list[dict[str, Any]]:
    """The `token.denied` audit events, newest first; those of `org_id` only when given."""
    params = {"action": "token.denied", **({"org": org_id} if org_id else {})}
    response = await client.get("/v1/audit", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["items"]
    assert all(event["outcome"] == "denied" for event in events)
    return events


async def denial_reasons(client: httpx.AsyncClient, org_id: str | None = None) -> list[str]:
    return [event["details"]["reason"] for event in await token_denials(client, org_id)]
