"""Client authentication at the token endpoint with client secrets (RFC 6749 §2.3), and the
refusals of clients whose credential, agent or org may no longer obtain tokens: each one is
`invalid_client` for the client and an audited `token.denied` with the exact reason.

private_key_jwt (RFC 7523) is in test_private_key_jwt.py.
"""

from __future__ import annotations

import base64

import httpx

from tabard.core.clock import FrozenClock
from tests.conftest import ADMIN, bearer, create_org_key
from tests.tokens.oauth_checks import (
    assert_invalid_client,
    assert_oauth_error,
    denial_reasons,
    token_denials,
)
from tests.tokens.support import (
    TOKEN_URL,
    AgentClient,
    agent_client,
    decode_with_published_keys,
    request_token,
)

GRANT = {"grant_type": "client_credentials"}


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def percent_encode_all(value: str) -> str:
    """Every octet as %XX: a valid application/x-www-form-urlencoded form of `value`."""
    return "".join(f"%{byte:02X}" for byte in value.encode())


def credentials_url(agent: AgentClient) -> str:
    return f"/v1/orgs/{agent.agent['org_id']}/agents/{agent.agent['id']}/credentials"


async def post_agent_action(client: httpx.AsyncClient, agent: AgentClient, action: str) -> None:
    url = f"/v1/orgs/{agent.agent['org_id']}/agents/{agent.agent['id']}/{action}"
    response = await client.post(url, headers=ADMIN)
    assert response.status_code == 200, response.text


async def assert_token_for(
    client: httpx.AsyncClient, response: httpx.Response, agent: AgentClient
) -> None:
    assert response.status_code == 200, response.text
    claims = await decode_with_published_keys(client, response.json()["access_token"])
    assert (claims["sub"], claims["client_id"]) == (agent.agent["id"], agent.client_id)


class TestClientSecretBasic:
    async def test_id_and_secret_in_basic_get_a_token(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        await assert_token_for(client, await request_token(client, agent), agent)

    async def test_form_urlencoded_id_and_secret_are_decoded(
        self, client: httpx.AsyncClient
    ) -> None:
        """RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding."""
        agent = await agent_client(client)
        headers = basic(percent_encode_all(agent.client_id), percent_encode_all(agent.secret))
        response = await client.post(TOKEN_URL, data=GRANT, headers=headers)
        await assert_token_for(client, response, agent)

    async def test_wrong_secret_is_invalid_client_audited_in_the_org(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await agent_client(client)
        response = await client.post(
            TOKEN_URL, data=GRANT, headers=basic(agent.client_id, agent.secret + "x")
        )
        assert_invalid_client(response)
        [event] = await token_denials(client, "acme")
        assert event["details"]["reason"] == "secret_mismatch"
        assert (event["org_id"], event["target"]) == ("acme", agent.client_id)

    async def test_unknown_client_is_invalid_client_audited_without_org(
        self, client: httpx.AsyncClient
    ) -> None:
        await agent_client(client)
        response = await client.post(TOKEN_URL, data=GRANT, headers=basic("tbd_cl_nobody", "x"))
        assert_invalid_client(response)
        [event] = await token_denials(client)
        assert (event["org_id"], event["target"]) == (None, "tbd_cl_nobody")
        assert event["details"]["reason"] == "unknown_client"

    async def test_unknown_client_and_wrong_secret_read_the_same(
        self, client: httpx.AsyncClient
    ) -> None:
        """The reason goes to the audit log only: a client cannot probe which ids exist."""
        agent = await agent_client(client)
        wrong = await client.post(TOKEN_URL, data=GRANT, headers=basic(agent.client_id, "x"))
        unknown = await client.post(TOKEN_URL, data=GRANT, headers=basic("tbd_cl_nobody", "x"))
        assert_invalid_client(wrong)
        assert_invalid_client(unknown)
        assert wrong.json() == unknown.json()

    async def test_basic_that_is_not_base64_is_invalid_client(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post(
            TOKEN_URL, data=GRANT, headers={"Authorization": "Basic not*base64!"}
        )
        assert_invalid_client(response)
        assert await denial_reasons(client) == ["malformed_basic"]

    async def test_basic_without_colon_is_invalid_client(self, client: httpx.AsyncClient) -> None:
        encoded = base64.b64encode(b"just-an-id").decode()
        response = await client.post(
            TOKEN_URL, data=GRANT, headers={"Authorization": f"Basic {encoded}"}
        )
        assert_invalid_client(response)
        assert await denial_reasons(client) == ["malformed_basic"]


class TestClientSecretPost:
    async def test_id_and_secret_in_the_body_get_a_token(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        form = {**GRANT, "client_id": agent.client_id, "client_secret": agent.secret}
        await assert_token_for(client, await client.post(TOKEN_URL, data=form), agent)

    async def test_wrong_secret_in_the_body_is_invalid_client(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await agent_client(client)
        form = {**GRANT, "client_id": agent.client_id, "client_secret": "tbd_cs_wrong"}
        assert_invalid_client(await client.post(TOKEN_URL, data=form))
        assert await denial_reasons(client, "acme") == ["secret_mismatch"]

    async def test_body_client_id_other_than_basic_is_invalid_client(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await agent_client(client)
        other = await agent_client(client, name="other-bot", create_org_too=False)
        response = await request_token(client, agent, client_id=other.client_id)
        assert_invalid_client(response)


class TestMethodCount:
    async def test_two_methods_at_once_are_invalid_request(self, client: httpx.AsyncClient) -> None:
        """RFC 6749 §2.3: a client must not use more than one authentication method."""
        agent = await agent_client(client)
        response = await request_token(
            client, agent, client_id=agent.client_id, client_secret=agent.secret
        )
        assert_oauth_error(response, 400, "invalid_request")
        assert "www-authenticate" not in response.headers

    async def test_no_authentication_is_invalid_client_audited(
        self, client: httpx.AsyncClient
    ) -> None:
        await agent_client(client)
        response = await client.post(TOKEN_URL, data=GRANT)
        assert_invalid_client(response)
        assert await denial_reasons(client) == ["no_authentication"]

    async def test_client_id_alone_is_invalid_client(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        response = await client.post(TOKEN_URL, data={**GRANT, "client_id": agent.client_id})
        assert_invalid_client(response)


class TestSecretRotation:
    async def test_previous_secret_works_during_the_grace_period_only(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await agent_client(client)
        url = f"{credentials_url(agent)}/{agent.credential_id}/rotate"
        rotated = await client.post(url, json={"grace_period_seconds": 600}, headers=ADMIN)
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["client_secret"]
        assert new_secret != agent.secret
        old = basic(agent.client_id, agent.secret)
        new = basic(agent.client_id, new_secret)
        await assert_token_for(client, await client.post(TOKEN_URL, data=GRANT, headers=old), agent)
        await assert_token_for(client, await client.post(TOKEN_URL, data=GRANT, headers=new), agent)
        clock.advance(601)
        assert_invalid_client(await client.post(TOKEN_URL, data=GRANT, headers=old))
        await assert_token_for(client, await client.post(TOKEN_URL, data=GRANT, headers=new), agent)
        assert await denial_reasons(client, "acme") == ["secret_mismatch"]

    async def test_rotation_without_grace_ends_the_old_secret_at_once(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await agent_client(client)
        url = f"{credentials_url(agent)}/{agent.credential_id}/rotate"
        assert (await client.post(url, json={}, headers=ADMIN)).status_code == 200
        assert_invalid_client(await request_token(client, agent))


class TestUnusableClients:
    """Each refusal is invalid_client for the client and names its reason in the org's log."""

    async def test_revoked_credential(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        url = f"{credentials_url(agent)}/{agent.credential_id}/revoke"
        assert (await client.post(url, headers=ADMIN)).status_code == 200
        assert_invalid_client(await request_token(client, agent))
        assert await denial_reasons(client, "acme") == ["credential_revoked"]

    async def test_expired_credential(self, client: httpx.AsyncClient, clock: FrozenClock) -> None:
        agent = await agent_client(client)
        response = await client.post(
            credentials_url(agent), json={"name": "short", "expires_in": 3600}, headers=ADMIN
        )
        assert response.status_code == 201, response.text
        short = basic(response.json()["client_id"], response.json()["client_secret"])
        assert (await client.post(TOKEN_URL, data=GRANT, headers=short)).status_code == 200
        clock.advance(3600)
        assert_invalid_client(await client.post(TOKEN_URL, data=GRANT, headers=short))
        assert await denial_reasons(client, "acme") == ["credential_expired"]

    async def test_suspended_agent(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        await post_agent_action(client, agent, "suspend")
        assert_invalid_client(await request_token(client, agent))
        assert await denial_reasons(client, "acme") == ["agent_suspended"]

    async def test_reactivated_agent_gets_tokens_again(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        await post_agent_action(client, agent, "suspend")
        await post_agent_action(client, agent, "reactivate")
        await assert_token_for(client, await request_token(client, agent), agent)

    async def test_decommissioned_agent(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        await post_agent_action(client, agent, "decommission")
        assert_invalid_client(await request_token(client, agent))
        # Decommissioning revokes the agent's credentials first, so that is the reason seen.
        assert await denial_reasons(client, "acme") == ["credential_revoked"]

    async def test_suspended_org(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        assert (await client.post("/v1/orgs/acme/suspend", headers=ADMIN)).status_code == 200
        assert_invalid_client(await request_token(client, agent))
        assert await denial_reasons(client, "acme") == ["org_suspended"]

    async def test_denial_is_in_the_org_log_its_own_key_reads(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await agent_client(client)
        key = await create_org_key(client, "acme")
        await post_agent_action(client, agent, "suspend")
        assert_invalid_client(await request_token(client, agent))
        response = await client.get(
            "/v1/audit", params={"action": "token.denied"}, headers=bearer(key)
        )
        assert response.status_code == 200, response.text
        [event] = response.json()["items"]
        assert (event["org_id"], event["target"]) == ("acme", agent.client_id)
        assert event["details"] == {"reason": "agent_suspended"}

    async def test_other_orgs_log_does_not_hold_the_denial(self, client: httpx.AsyncClient) -> None:
        agent = await agent_client(client)
        await agent_client(client, "globex", "other-bot")
        await post_agent_action(client, agent, "suspend")
        assert_invalid_client(await request_token(client, agent))
        assert await denial_reasons(client, "globex") == []
        assert await denial_reasons(client, "acme") == ["agent_suspended"]
