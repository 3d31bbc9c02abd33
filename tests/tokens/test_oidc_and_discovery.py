"""OpenID Connect on the token endpoint (`scope=openid` → ID token, OIDC Core §2), the userinfo
endpoint (§5.3), and the server metadata (RFC 8414 §3, OIDC Discovery §3)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, bearer, create_agent, create_org
from tests.tokens.support import (
    ISSUER,
    AgentClient,
    access_token,
    agent_client,
    decode_with_published_keys,
    header_of,
    request_token,
)

USERINFO = "/oauth2/userinfo"
METADATA_PATHS = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


async def profiled_agent(client: httpx.AsyncClient) -> AgentClient:
    """An agent with a display name, description and endpoint: every profile claim is set."""
    await create_org(client, "acme")
    await create_agent(
        client,
        "acme",
        "profiled-bot",
        display_name="Profiled Bot",
        description="Reconciles invoices",
        endpoint_url="https://bots.acme.example/profiled",
        version="1.4.0",
        capabilities=["invoices.read"],
    )
    agents = (await client.get("/v1/orgs/acme/agents", headers=ADMIN)).json()["items"]
    [agent] = agents
    url = f"/v1/orgs/acme/agents/{agent['id']}/credentials"
    created = (await client.post(url, json={"name": "main"}, headers=ADMIN)).json()
    return AgentClient(agent, created["client_id"], created["client_secret"], created["id"])


async def id_token_of(client: httpx.AsyncClient, agent: AgentClient) -> str:
    response = await request_token(client, agent, scope="openid invoices.read")
    assert response.status_code == 200, response.text
    token: str = response.json()["id_token"]
    return token


class TestIdToken:
    async def test_openid_scope_returns_a_verifiable_id_token(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await profiled_agent(client)
        id_token = await id_token_of(client, agent)
        header = header_of(id_token)
        jwks = (await client.get("/.well-known/jwks.json")).json()
        assert header["typ"] == "JWT"
        assert header["kid"] in {key["kid"] for key in jwks["keys"]}
        claims = await decode_with_published_keys(client, id_token)
        assert claims["iss"] == ISSUER
        assert (claims["aud"], claims["azp"]) == (agent.client_id, agent.client_id)
        assert claims["sub"] == agent.agent["id"]
        assert claims["exp"] > claims["iat"]

    async def test_id_token_describes_the_agent(self, client: httpx.AsyncClient) -> None:
        agent = await profiled_agent(client)
        claims = await decode_with_published_keys(client, await id_token_of(client, agent))
        assert claims["name"] == "Profiled Bot"
        assert claims["preferred_username"] == "profiled-bot"
        assert claims["website"] == "https://bots.acme.example/profiled"
        assert claims["description"] == "Reconciles invoices"
        assert (claims["org"], claims["agent_did"]) == ("acme", agent.agent["did"])
        assert claims["capabilities"] == ["invoices.read"]

    async def test_id_token_is_not_an_access_token(self, client: httpx.AsyncClient) -> None:
        """An ID token (typ JWT, aud = the client) is refused where an access token is due."""
        agent = await profiled_agent(client)
        id_token = await id_token_of(client, agent)
        response = await client.get(USERINFO, headers=bearer(id_token))
        assert response.status_code == 401, response.text

    async def test_access_token_keeps_openid_in_its_scope(self, client: httpx.AsyncClient) -> None:
        agent = await profiled_agent(client)
        response = await request_token(client, agent, scope="openid invoices.read")
        claims = await decode_with_published_keys(client, response.json()["access_token"])
        assert claims["scope"] == "openid invoices.read"
        assert claims["aud"] == ISSUER


class TestUserinfo:
    @pytest.mark.parametrize("method", ["GET", "POST"])
    async def test_openid_token_gets_the_profile(
        self, client: httpx.AsyncClient, method: str
    ) -> None:
        agent = await profiled_agent(client)
        token = await access_token(client, agent, scope="openid")
        response = await client.request(method, USERINFO, headers=bearer(token))
        assert response.status_code == 200, response.text
        profile = response.json()
        assert profile["sub"] == agent.agent["id"]
        assert profile["name"] == "Profiled Bot"
        assert profile["preferred_username"] == "profiled-bot"
        assert profile["agent_did"] == agent.agent["did"]

    async def test_profile_is_current_not_as_issued(self, client: httpx.AsyncClient) -> None:
        """OIDC Core §5.3: userinfo returns the claims as they are now."""
        agent = await profiled_agent(client)
        token = await access_token(client, agent, scope="openid")
        url = f"/v1/orgs/acme/agents/{agent.agent['id']}"
        patched = await client.patch(url, json={"display_name": "Renamed Bot"}, headers=ADMIN)
        assert patched.status_code == 200, patched.text
        profile = (await client.get(USERINFO, headers=bearer(token))).json()
        assert profile["name"] == "Renamed Bot"

    async def test_token_without_openid_is_403_insufficient_scope(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await agent_client(client)
        token = await access_token(client, agent)
        response = await client.get(USERINFO, headers=bearer(token))
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "INSUFFICIENT_SCOPE"
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        assert 'error="insufficient_scope"' in challenge

    async def test_no_token_is_401_with_a_bearer_challenge(self, client: httpx.AsyncClient) -> None:
        response = await client.get(USERINFO)
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer ")

    async def test_forged_token_is_401(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        token = await access_token(client, agent, scope="openid")
        header, payload, signature = token.split(".")
        forged = f"{header}.{payload}.{signature[:-4]}AAAA"
        response = await client.get(USERINFO, headers=bearer(forged))
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "INVALID_TOKEN"

    async def test_token_of_a_suspended_agent_is_401(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        token = await access_token(client, agent, scope="openid")
        url = f"/v1/orgs/acme/agents/{agent.agent['id']}/suspend"
        assert (await client.post(url, headers=ADMIN)).status_code == 200
        response = await client.get(USERINFO, headers=bearer(token))
        assert response.status_code == 401, response.text


async def metadata(client: httpx.AsyncClient, path: str) -> dict[str, Any]:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


@pytest.mark.parametrize("path", METADATA_PATHS)
class TestServerMetadata:
    async def test_issuer_and_endpoints(self, client: httpx.AsyncClient, path: str) -> None:
        document = await metadata(client, path)
        assert document["issuer"] == ISSUER
        assert document["token_endpoint"] == f"{ISSUER}/oauth2/token"
        assert document["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
        assert document["introspection_endpoint"] == f"{ISSUER}/oauth2/introspect"
        assert document["revocation_endpoint"] == f"{ISSUER}/oauth2/revoke"
        assert document["userinfo_endpoint"] == f"{ISSUER}/oauth2/userinfo"

    async def test_every_advertised_endpoint_exists(
        self, client: httpx.AsyncClient, path: str
    ) -> None:
        document = await metadata(client, path)
        urls = [value for name, value in document.items() if name.endswith(("_endpoint", "_uri"))]
        assert len(urls) >= 5
        for url in urls:
            assert url.startswith(ISSUER), url
            for method in ("GET", "POST"):
                response = await client.request(method, url.removeprefix(ISSUER))
                assert response.status_code != 404, (method, url)

    async def test_grant_types(self, client: httpx.AsyncClient, path: str) -> None:
        document = await metadata(client, path)
        assert set(document["grant_types_supported"]) == {"client_credentials", TOKEN_EXCHANGE}

    async def test_client_authentication(self, client: httpx.AsyncClient, path: str) -> None:
        document = await metadata(client, path)
        assert set(document["token_endpoint_auth_methods_supported"]) == {
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "tls_client_auth",
            "self_signed_tls_client_auth",
        }
        algorithms = set(document["token_endpoint_auth_signing_alg_values_supported"])
        assert {"ES256", "RS256", "Ed25519"} <= algorithms
        # RFC 8414 §2: "none" must not be listed; HMAC has no place with public keys.
        assert not {alg for alg in algorithms if alg == "none" or alg.startswith("HS")}

    async def test_sender_constraint(self, client: httpx.AsyncClient, path: str) -> None:
        document = await metadata(client, path)
        dpop = set(document["dpop_signing_alg_values_supported"])
        assert {"ES256", "Ed25519", "RS256"} <= dpop
        assert not {alg for alg in dpop if alg == "none" or alg.startswith("HS")}
        assert document["tls_client_certificate_bound_access_tokens"] is True

    async def test_openid_fields(self, client: httpx.AsyncClient, path: str) -> None:
        document = await metadata(client, path)
        assert "openid" in document["scopes_supported"]
        assert document["subject_types_supported"] == ["public"]
        assert "ES256" in document["id_token_signing_alg_values_supported"]
        assert {"sub", "iss", "name"} <= set(document["claims_supported"])

    async def test_metadata_may_be_cached(self, client: httpx.AsyncClient, path: str) -> None:
        response = await client.get(path)
        assert "max-age" in response.headers["cache-control"]
        assert response.headers["content-type"] == "application/json"

    async def test_both_documents_agree(self, client: httpx.AsyncClient, path: str) -> None:
        documents = [await metadata(client, other) for other in METADATA_PATHS]
        assert await metadata(client, path) == documents[0] == documents[1]
