"""A small synchronous client for the Tabard HTTP API (operators and scripts)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx


class TabardAPIError(Exception):
    """A problem+json answer: `code` is the stable error code, `status` the HTTP status."""

    def __init__(self, status: int, code: str, detail: str, request_id: str | None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.request_id = request_id


class Client:
    """`Client("http://127.0.0.1:8080", token)`; use as a context manager to close the pool."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def me(self) -> dict[str, Any]:
        return self._call("GET", "/v1/me")

    def create_org(self, org_id: str, display_name: str, tier: str = "free") -> dict[str, Any]:
        body = {"id": org_id, "display_name": display_name, "tier": tier}
        return self._call("POST", "/v1/orgs", json=body)

    def create_api_key(self, org_id: str, name: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/orgs/{org_id}/keys", json={"name": name})

    def register_agent(self, org_id: str, name: str, **fields: Any) -> dict[str, Any]:
        """Register an agent; `fields` are the optional agent fields (capabilities, version, …)."""
        return self._call("POST", f"/v1/orgs/{org_id}/agents", json={"name": name, **fields})

    def get_agent(self, org_id: str, agent_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/orgs/{org_id}/agents/{agent_id}")

    def update_agent(self, org_id: str, agent_id: str, **fields: Any) -> dict[str, Any]:
        return self._call("PATCH", f"/v1/orgs/{org_id}/agents/{agent_id}", json=fields)

    def set_agent_status(self, org_id: str, agent_id: str, action: str) -> dict[str, Any]:
        """`action` is `suspend`, `reactivate` or `decommission` (final)."""
        return self._call("POST", f"/v1/orgs/{org_id}/agents/{agent_id}/{action}")

    def discover_agents(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every agent matching `filters` (`capability` may be a list), following the pages."""
        params = dict(filters)
        while True:
            page = self._call("GET", "/v1/discovery/agents", params=params)
            yield from page["items"]
            if not page["next_cursor"]:
                return
            params["cursor"] = page["next_cursor"]

    def generate_agent_key(
        self, org_id: str, agent_id: str, algorithm: str = "Ed25519"
    ) -> dict[str, Any]:
        """A new key pair for the agent; `private_jwk` in the result is the only copy."""
        path = f"/v1/orgs/{org_id}/agents/{agent_id}/keys"
        return self._call("POST", path, json={"generate": algorithm})

    def create_client_credential(self, org_id: str, agent_id: str, **fields: Any) -> dict[str, Any]:
        """A client credential; `client_secret` in the result is shown only this once."""
        path = f"/v1/orgs/{org_id}/agents/{agent_id}/credentials"
        return self._call("POST", path, json=fields)

    def rotate_client_secret(
        self, org_id: str, agent_id: str, credential_id: str, grace_period_seconds: int = 0
    ) -> dict[str, Any]:
        path = f"/v1/orgs/{org_id}/agents/{agent_id}/credentials/{credential_id}/rotate"
        return self._call("POST", path, json={"grace_period_seconds": grace_period_seconds})

    def verify_audit(self) -> dict[str, Any]:
        return self._call("GET", "/v1/audit/verify")

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._http.request(method, path, **kwargs)
        if response.is_error:
            raise _error(response)
        body: dict[str, Any] = response.json()
        return body


def _error(response: httpx.Response) -> TabardAPIError:
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    return TabardAPIError(
        response.status_code,
        str(problem.get("code", "HTTP_ERROR")),
        str(problem.get("detail", response.reason_phrase)),
        problem.get("request_id"),
    )
