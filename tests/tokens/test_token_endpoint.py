"""The token endpoint's answers: RFC 6749 §5.2 errors, scope (§3.3), RFC 9068 access tokens with
their audience (RFC 8707 `resource`, RFC 8693 `audience`), and each org's token lifetime.

Tokens are checked with joserfc against the published JWKS only (`decode_with_published_keys`).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tabard.core.clock import FrozenClock
from tests.conftest import ADMIN, bearer, create_org, create_org_key
from tests.tokens.oauth_checks import assert_oauth_error, denial_reasons
from tests.tokens.support import (
    CAPABILITIES,
    ISSUER,
    TOKEN_URL,
    AgentClient,
    access_token,
    agent_client,
    decode_with_published_keys,
    header_of,
    request_token,
)

FORM = {"content-type": "application/x-www-form-urlencoded"}
UNBOUND_CLAIMS = {
    "iss",
    "sub",
    "aud",
    "client_id",
    "scope",
    "jti",
    "iat",
    "exp",
    "org",
    "agent_did",
}


async def post_raw(client: httpx.AsyncClient, agent: AgentClient, body: str) -> httpx.Response:
    return await client.post(TOKEN_URL, content=body, headers={**agent.basic, **FORM})


async def claims_of(client: httpx.AsyncClient, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return await decode_with_published_keys(client, response.json()["access_token"])


class TestErrorResponses:
    """RFC 6749 §5.2: JSON with `error` and `error_description`, status 400, never cached."""

    async def test_unsupported_grant_type(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        response = await request_token(client, agent, grant_type="password")
        assert_oauth_error(response, 400, "unsupported_grant_type")

    async def test_missing_grant_type_is_invalid_request(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        response = await post_raw(client, agent, "scope=invoices.read")
        description = assert_oauth_error(response, 400, "invalid_request")
        assert "grant_type" in description

    async def test_repeated_parameter_is_invalid_request(self, client: httpx.AsyncClient) -> None:
        """RFC 6749 §3.2: request parameters must not be included more than once."""
        agent = await agent_client(client)
        body = "grant_type=client_credentials&scope=invoices.read&scope=payments.read"
        description = assert_oauth_error(
            await post_raw(client, agent, body), 400, "invalid_request"
        )
        assert "scope" in description

    async def test_json_body_is_invalid_request(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        response = await client.post(
            TOKEN_URL, json={"grant_type": "client_credentials"}, headers=agent.basic
        )
        description = assert_oauth_error(response, 400, "invalid_request")
        assert "application/x-www-form-urlencoded" in description

    async def test_form_with_a_charset_parameter_is_accepted(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await agent_client(client)
        response = await client.post(
            TOKEN_URL,
            content="grant_type=client_credentials",
            headers={
                **agent.basic,
                "content-type": "application/x-www-form-urlencoded; charset=UTF-8",
            },
        )
        assert response.status_code == 200, response.text

    async def test_success_is_never_cached(self, client: httpx.AsyncClient) -> None:
        """RFC 6749 §5.1: Cache-Control no-store and Pragma no-cache on the token response."""
        agent = await agent_client(client)
        response = await request_token(client, agent)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["pragma"] == "no-cache"
        assert response.headers["content-type"] == "application/json"

    async def test_get_is_not_allowed(self, client: httpx.AsyncClient) -> None:
        response = await client.get(TOKEN_URL)
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"


class TestScope:
    async def test_default_scope_is_every_capability(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        response = await request_token(client, agent)
        assert response.json()["scope"] == " ".join(CAPABILITIES)
        assert (await claims_of(client, response))["scope"] == " ".join(CAPABILITIES)

    async def test_requested_subset_is_granted_in_order_once(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await agent_client(client)
        response = await request_token(
            client, agent, scope="payments.read invoices.read payments.read"
        )
        assert response.json()["scope"] == "payments.read invoices.read"
        assert (await claims_of(client, response))["scope"] == "payments.read invoices.read"

    async def test_scope_outside_the_capabilities_is_invalid_scope_audited(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await agent_client(client)
        response = await request_token(client, agent, scope="invoices.read admin.everything")
        description = assert_oauth_error(response, 400, "invalid_scope")
        assert "admin.everything" in description
        assert "invoices.read" not in description
        assert await denial_reasons(client, "acme") == ["invalid_scope"]

    async def test_blank_scope_is_invalid_scope(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        response = await post_raw(client, agent, "grant_type=client_credentials&scope=%20%20")
        assert_oauth_error(response, 400, "invalid_scope")

    async def test_scope_without_a_value_counts_as_omitted(self, client: httpx.AsyncClient) -> None:
        """RFC 6749 §3.2: parameters sent without a value are treated as omitted."""
        agent = await agent_client(client)
        response = await post_raw(client, agent, "grant_type=client_credentials&scope=")
        assert response.json()["scope"] == " ".join(CAPABILITIES)

    async def test_agent_without_capabilities_may_ask_for_openid(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await agent_client(client, create_org_too=False, capabilities=["ping"])
        response = await request_token(client, agent, scope="openid ping")
        assert response.json()["scope"] == "openid ping"


class TestAccessToken:
    """RFC 9068 §2: a JWT with typ at+jwt, signed by a key the JWKS publishes."""

    async def test_header_is_at_jwt_with_a_published_kid(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        header = header_of(await access_token(client, agent))
        jwks = (await client.get("/.well-known/jwks.json")).json()
        assert header["typ"] == "at+jwt"
        assert header["alg"] == "ES256"
        assert header["kid"] in {key["kid"] for key in jwks["keys"]}

    async def test_claims_describe_the_agent(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await agent_client(client)
        claims = await claims_of(client, await request_token(client, agent))
        assert set(claims) == UNBOUND_CLAIMS  # no cnf when unbound, no act when not delegated
        assert claims["iss"] == ISSUER
        assert claims["sub"] == agent.agent["id"]
        assert claims["aud"] == ISSUER
        assert claims["client_id"] == agent.client_id
        assert claims["org"] == "acme"
        assert claims["agent_did"] == agent.agent["did"]
        assert claims["iat"] == int(clock.timestamp())

    async def test_default_lifetime_is_fifteen_minutes(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        response = await request_token(client, agent)
        claims = await claims_of(client, response)
        assert claims["exp"] - claims["iat"] == 900
        assert response.json()["expires_in"] == 900
        assert response.json()["token_type"] == "Bearer"

    async def test_each_token_has_its_own_jti(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        jtis = set()
        for _ in range(3):
            jtis.add((await claims_of(client, await request_token(client, agent)))["jti"])
        assert len(jtis) == 3

    async def test_response_has_no_id_token_without_openid(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        body = (await request_token(client, agent)).json()
        assert set(body) == {"access_token", "token_type", "expires_in", "scope"}

    async def test_issue_is_audited_in_the_org(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        claims = await claims_of(client, await request_token(client, agent))
        events = await client.get(
            "/v1/audit", params={"org": "acme", "action": "token.issued"}, headers=ADMIN
        )
        [event] = events.json()["items"]
        assert (event["actor_kind"], event["actor_id"]) == ("agent", agent.agent["id"])
        assert event["details"]["jti"] == claims["jti"]
        assert event["details"]["client_id"] == agent.client_id


class TestAudience:
    """`aud` from RFC 8707 `resource` (absolute URIs, repeatable) and RFC 8693 `audience`."""

    async def test_one_resource_is_the_audience(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        response = await request_token(client, agent, resource="https://api.example/invoices")
        assert (await claims_of(client, response))["aud"] == "https://api.example/invoices"

    async def test_repeated_resources_are_all_audiences(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        body = (
            "grant_type=client_credentials&resource=https%3A%2F%2Fa.example%2F"
            "&resource=https%3A%2F%2Fb.example%2F&resource=https%3A%2F%2Fa.example%2F"
        )
        claims = await claims_of(client, await post_raw(client, agent, body))
        assert claims["aud"] == ["https://a.example/", "https://b.example/"]

    async def test_audience_names_join_resources(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        body = "grant_type=client_credentials&resource=https%3A%2F%2Fa.example%2F&audience=billing"
        claims = await claims_of(client, await post_raw(client, agent, body))
        assert claims["aud"] == ["https://a.example/", "billing"]

    async def test_resource_urn_is_an_absolute_uri(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        response = await request_token(client, agent, resource="urn:example:ledger")
        assert (await claims_of(client, response))["aud"] == "urn:example:ledger"

    @pytest.mark.parametrize(
        "resource", ["https://api.example/invoices#part", "/invoices", "api.example"]
    )
    async def test_resource_with_fragment_or_not_absolute_is_invalid_target(
        self, client: httpx.AsyncClient, resource: str
    ) -> None:
        agent = await agent_client(client)
        response = await request_token(client, agent, resource=resource)
        assert_oauth_error(response, 400, "invalid_target")

    async def test_more_than_ten_audiences_is_invalid_target(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await agent_client(client)
        body = "grant_type=client_credentials" + "".join(f"&audience=svc-{n}" for n in range(11))
        assert_oauth_error(await post_raw(client, agent, body), 400, "invalid_target")


class TestOrgTokenLifetime:
    """PATCH /v1/orgs/{org}/token-settings: a lifetime within [60, max] for the org's tokens."""

    URL = "/v1/orgs/acme/token-settings"

    async def test_org_lifetime_sets_exp_and_expires_in(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        key = await create_org_key(client, "acme")
        patched = await client.patch(
            self.URL, json={"access_token_lifetime_seconds": 300}, headers=bearer(key)
        )
        assert patched.status_code == 200, patched.text
        assert patched.json() == {"access_token_lifetime_seconds": 300, "require_dpop": False}
        response = await request_token(client, agent)
        claims = await claims_of(client, response)
        assert claims["exp"] - claims["iat"] == 300
        assert response.json()["expires_in"] == 300

    async def test_null_lifetime_returns_to_the_default(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        body = {"access_token_lifetime_seconds": 120}
        assert (await client.patch(self.URL, json=body, headers=ADMIN)).status_code == 200
        reset = await client.patch(
            self.URL, json={"access_token_lifetime_seconds": None}, headers=ADMIN
        )
        assert reset.json()["access_token_lifetime_seconds"] == 900
        assert (await request_token(client, agent)).json()["expires_in"] == 900

    async def test_other_orgs_are_unaffected(self, client: httpx.AsyncClient) -> None:
        await agent_client(client)
        other = await agent_client(client, "globex", "other-bot")
        body = {"access_token_lifetime_seconds": 120}
        assert (await client.patch(self.URL, json=body, headers=ADMIN)).status_code == 200
        assert (await request_token(client, other)).json()["expires_in"] == 900

    @pytest.mark.parametrize("lifetime", [0, 59, 3601])
    async def test_lifetime_out_of_bounds_is_422(
        self, client: httpx.AsyncClient, lifetime: int
    ) -> None:
        agent = await agent_client(client)
        body = {"access_token_lifetime_seconds": lifetime}
        response = await client.patch(self.URL, json=body, headers=ADMIN)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        fields = [error["field"] for error in response.json()["errors"]]
        assert any(field.endswith("access_token_lifetime_seconds") for field in fields), fields
        assert (await request_token(client, agent)).json()["expires_in"] == 900

    async def test_key_of_another_org_is_404(self, client: httpx.AsyncClient) -> None:
        await agent_client(client)
        await create_org(client, "globex")
        stranger = bearer(await create_org_key(client, "globex"))
        body = {"access_token_lifetime_seconds": 120}
        assert (await client.patch(self.URL, json=body, headers=stranger)).status_code == 404
        assert (await client.get(self.URL, headers=stranger)).status_code == 404
        settings = await client.get(self.URL, headers=ADMIN)
        assert settings.json()["access_token_lifetime_seconds"] == 900

    async def test_agent_token_cannot_change_its_org_settings(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await agent_client(client)
        token = await access_token(client, agent)
        body = {"access_token_lifetime_seconds": 3600}
        response = await client.patch(self.URL, json=body, headers=bearer(token))
        assert response.status_code == 403, response.text


class TestCredentialLastUse:
    async def test_issuing_records_the_credentials_last_use_at_most_once_a_minute(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await agent_client(client)
        url = f"/v1/orgs/acme/agents/{agent.agent['id']}/credentials/{agent.credential_id}"
        assert (await client.get(url, headers=ADMIN)).json()["last_used_at"] is None

        assert (await request_token(client, agent)).status_code == 200
        first = (await client.get(url, headers=ADMIN)).json()["last_used_at"]
        assert first is not None
        clock.advance(30)
        assert (await request_token(client, agent)).status_code == 200
        assert (await client.get(url, headers=ADMIN)).json()["last_used_at"] == first
        clock.advance(31)
        assert (await request_token(client, agent)).status_code == 200
        assert (await client.get(url, headers=ADMIN)).json()["last_used_at"] != first
