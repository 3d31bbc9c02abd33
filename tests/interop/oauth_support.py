"""A real `tabard serve` whose public URL is the loopback address clients call, with an org and
helpers that register agents and their credentials over HTTP, as an operator would."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey

from tests.support.server import Server, free_port

ADMIN_SECRET = "interop-admin-secret-long-enough-for-production-0123"
ADMIN = {"Authorization": f"Bearer {ADMIN_SECRET}"}
ORG = "acme"
CAPABILITIES = ["invoices.read", "invoices.write"]


@dataclass(frozen=True)
class SecretClient:
    agent_id: str
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class KeyClient:
    agent_id: str
    client_id: str
    private_key: ECKey


@dataclass(frozen=True)
class Deployment:
    """The running server and an admin HTTP client on it (base URL = issuer)."""

    server: Server
    http: httpx.Client

    @property
    def issuer(self) -> str:
        return self.server.url

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/oauth2/token"

    def agent(self, name: str) -> str:
        """Register an agent of the org; its id."""
        response = self.http.post(
            f"/v1/orgs/{ORG}/agents", json={"name": name, "capabilities": CAPABILITIES}
        )
        assert response.status_code == 201, response.text
        agent_id: str = response.json()["id"]
        return agent_id

    def secret_client(self, name: str) -> SecretClient:
        """A new agent with a `client_secret` credential (RFC 6749 §2.3.1)."""
        agent_id = self.agent(name)
        body = self._credential(agent_id, {"name": "main"})
        return SecretClient(agent_id, body["client_id"], body["client_secret"])

    def key_client(self, name: str) -> KeyClient:
        """A new agent with a `private_key_jwt` credential: an ES256 key registered as jwks."""
        agent_id = self.agent(name)
        key = ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"}, auto_kid=True)
        jwks = {"keys": [key.as_dict(private=False)]}
        body = self._credential(agent_id, {"auth_method": "private_key_jwt", "jwks": jwks})
        return KeyClient(agent_id, body["client_id"], key)

    def token(self, client: SecretClient, dpop: str | None = None) -> httpx.Response:
        """POST /oauth2/token with client_credentials and client_secret_basic."""
        return httpx.post(
            self.token_endpoint,
            data={"grant_type": "client_credentials"},
            auth=(client.client_id, client.client_secret),
            headers={"DPoP": dpop} if dpop else {},
        )

    def access_token(self, client: SecretClient) -> str:
        response = self.token(client)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 introspection, asked by the platform admin."""
        response = self.http.post("/oauth2/introspect", data={"token": token})
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def rotate_signing_key(self, *, revoke_previous: bool = False) -> dict[str, Any]:
        response = self.http.post(
            "/v1/admin/signing-keys/rotate", json={"revoke_previous": revoke_previous}
        )
        assert response.status_code == 200, response.text
        rotation: dict[str, Any] = response.json()
        return rotation

    def _credential(self, agent_id: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(f"/v1/orgs/{ORG}/agents/{agent_id}/credentials", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


def run_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Start a server on a port chosen first, so TABARD_PUBLIC_URL (the issuer, the `htu` of
    DPoP proofs) is exactly the address the clients call; create the org; stop at the end."""
    port = free_port()
    env = {"TABARD_ADMIN_SECRET": ADMIN_SECRET, "TABARD_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    server = Server(tmp_path_factory.mktemp("interop"), extra_env=env, port=port)
    try:
        with httpx.Client(base_url=server.url, headers=ADMIN) as http:
            # Enterprise: every test registers its own agents, more than the free tier's few.
            org = {"id": ORG, "display_name": "Acme", "tier": "enterprise"}
            response = http.post("/v1/orgs", json=org)
            assert response.status_code == 201, response.text
            yield Deployment(server, http)
    finally:
        server.stop()
