"""Delegation chains by token exchange (RFC 8693): agent B acts for agent A with A's token.

Every test goes through `/oauth2/token` of the real app; the claims are read with joserfc from the
published JWKS only, so what is checked is what a resource server would see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tabard.core.clock import FrozenClock
from tests.conftest import ADMIN, bearer, create_org_key
from tests.tokens.support import (
    TOKEN_URL,
    AgentClient,
    access_token,
    agent_client,
    decode_with_published_keys,
)

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
CHAINS_METRIC = "tabard_delegation_chains_created"


@dataclass(frozen=True)
class Agents:
    """Three agents of org `acme`: A delegates to B, B hands down to C."""

    a: AgentClient
    b: AgentClient
    c: AgentClient


@pytest.fixture
async def agents(client: httpx.AsyncClient) -> Agents:
    a = await agent_client(client, "acme", "alice")
    b = await agent_client(client, "acme", "bob", create_org_too=False)
    c = await agent_client(client, "acme", "carol", create_org_too=False)
    return Agents(a, b, c)


async def exchange(
    client: httpx.AsyncClient,
    actor: AgentClient,
    subject_token: str | None,
    actor_token: str | None,
    **form: str,
) -> httpx.Response:
    """B (`actor`, authenticated with its own secret) asks for a token acting for the subject."""
    data = {"grant_type": TOKEN_EXCHANGE, **form}
    if subject_token is not None:
        data |= {"subject_token": subject_token, "subject_token_type": ACCESS_TOKEN_TYPE}
    if actor_token is not None:
        data |= {"actor_token": actor_token, "actor_token_type": ACCESS_TOKEN_TYPE}
    return await client.post(TOKEN_URL, data=data, headers=actor.basic)


async def delegate(
    client: httpx.AsyncClient, actor: AgentClient, subject_token: str, **form: str
) -> str:
    """The delegated token `actor` obtains for `subject_token` with a fresh token of its own."""
    own = await access_token(client, actor)
    response = await exchange(client, actor, subject_token, own, **form)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/v1/me", headers=bearer(token))


async def introspect(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    response = await client.post("/oauth2/introspect", data={"token": token}, headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def chains_created(client: httpx.AsyncClient) -> float:
    scraped = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(scraped):
        if family.name == CHAINS_METRIC:
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    raise AssertionError(f"{CHAINS_METRIC} is not exported")


def assert_oauth_error(response: httpx.Response, error: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error


class TestExchange:
    async def test_delegated_token_speaks_for_the_subject_with_the_actor_named(
        self, client: httpx.AsyncClient, agents: Agents
    ) -> None:
        subject = await access_token(client, agents.a)
        actor = await access_token(client, agents.b)

        response = await exchange(client, agents.b, subject, actor)

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
        assert body["token_type"] == "Bearer"
        claims = await decode_with_published_keys(client, body["access_token"])
        subject_claims = await decode_with_published_keys(client, subject)
        actor_claims = await decode_with_published_keys(client, actor)
        assert claims["sub"] == agents.a.agent["id"]
        assert claims["act"] == {"sub": agents.b.agent["id"]}
        assert claims["client_id"] == agents.b.client_id
        assert isinstance(claims["chain_id"], str)
        assert claims["chain_id"]
        assert set(claims["derived_from"]) == {subject_claims["jti"], actor_claims["jti"]}

    async def test_delegated_scope_is_within_both_tokens(
        self, client: httpx.AsyncClient, agents: Agents
    ) -> None:
        subject = await access_token(client, agents.a, scope="invoices.read invoices.write")
        actor = await access_token(client, agents.b, scope="invoices.read payments.read")

        response = await exchange(client, agents.b, subject, actor)

        assert response.status_code == 200, response.text
        assert response.json()["scope"] == "invoices.read"
        claims = await decode_with_published_keys(client, response.json()["access_token"])
        assert claims["scope"] == "invoices.read"

    @pytest.mark.parametrize("scope", ["invoices.write", "payments.read", "invoices.read admin"])
    async def test_scope_outside_either_token_is_invalid_scope(
        self, client: httpx.AsyncClient, agents: Agents, scope: str
    ) -> None:
        subject = await access_token(client, agents.a, scope="invoices.read invoices.write")
        actor = await access_token(client, agents.b, scope="invoices.read payments.read")

        response = await exchange(client, agents.b, subject, actor, scope=scope)

        assert_oauth_error(response, "invalid_scope")

    async def test_delegated_token_dies_no_later_than_the_subject_token(
        self, client: httpx.AsyncClient, agents: Agents, clock: FrozenClock
    ) -> None:
        subject = await access_token(client, agents.a)
        clock.advance(600)  # the subject token has 300 of its 900 seconds left

        delegated = await delegate(client, agents.b, subject)

        claims = await decode_with_published_keys(client, delegated)
        subject_exp = (await decode_with_published_keys(client, subject))["exp"]
        assert claims["exp"] <= subject_exp
        assert claims["exp"] - claims["iat"] <= 300

    async def test_handing_down_a_delegated_token_nests_the_actors(
        self, client: httpx.AsyncClient, agents: Agents
    ) -> None:
        first = await delegate(client, agents.b, await access_token(client, agents.a))

        second = await delegate(client, agents.c, first)

        claims = await decode_with_published_keys(client, second)
        first_claims = await decode_with_published_keys(client, first)
        assert claims["sub"] == agents.a.agent["id"]
        assert claims["act"] == {"sub": agents.c.agent["id"], "act": {"sub": agents.b.agent["id"]}}
        assert claims["chain_id"] == first_claims["chain_id"]
        assert first_claims["jti"] in claims["derived_from"]
        assert set(first_claims["derived_from"]) <= set(claims["derived_from"])

    @pytest.mark.parametrize("overrides", [{"delegation_max_depth": 1}], ids=["max_depth_1"])
    async def test_chain_deeper_than_the_maximum_is_invalid_grant(
        self, client: httpx.AsyncClient, agents: Agents
    ) -> None:
        first = await delegate(client, agents.b, await access_token(client, agents.a))

        response = await exchange(client, agents.c, first, await access_token(client, agents.c))

        assert_oauth_error(response, "invalid_grant")

    async def test_actor_token_of_another_agent_is_invalid_grant(
        self, client: httpx.AsyncClient, agents: Agents
    ) -> None:
        subject = await access_token(client, agents.a)
        someone_else = await access_token(client, agents.c)

        response = await exchange(client, agents.b, subject, someone_else)

        assert_oauth_error(response, "invalid_grant")

    async def test_subject_of_another_org_is_unauthorized_client(
        self, client: httpx.AsyncClient, agents: Agents
    ) -> None:
        outsider = await agent_client(client, "globex", "alice")
        subject = await access_token(client, outsider)

        response = await exchange(client, agents.b, subject, await access_token(client, agents.b))

        assert_oauth_error(response, "unauthorized_client")

    @pytest.mark.parametrize("missing", ["subject", "actor"])
    async def test_missing_subject_or_actor_token_is_invalid_request(
        self, client: httpx.AsyncClient, agents: Agents, missing: str
    ) -> None:
        subject = await access_token(client, agents.a)
        actor = await access_token(client, agents.b)

        response = await exchange(
            client,
            agents.b,
            None if missing == "subject" else subject,
            None if missing == "actor" else actor,
        )

        assert_oauth_error(response, "invalid_request")

    async def test_expired_subject_token_is_invalid_grant(
        self, client: httpx.AsyncClient, agents: Agents, clock: FrozenClock
    ) -> None:
        subject = await access_token(client, agents.a)
        clock.advance(900 + 60)  # past exp and the verifier's leeway

        response = await exchange(client, agents.b, subject, await access_token(client, agents.b))

        assert_oauth_error(response, "invalid_grant")

    async def test_revoked_subject_token_is_invalid_grant(
        self, client: httpx.AsyncClient, agents: Agents
    ) -> None:
        subject = await access_token(client, agents.a)
        revoked = await client.post(
            "/oauth2/revoke", data={"token": subject}, headers=agents.a.basic
        )
        assert revoked.status_code == 200

        response = await exchange(client, agents.b, subject, await access_token(client, agents.b))

        assert_oauth_error(response, "invalid_grant")

    async def test_new_chain_counts_in_the_metric_and_a_handed_down_link_does_not(
        self, client: httpx.AsyncClient, agents: Agents
    ) -> None:
        before = await chains_created(client)
        first = await delegate(client, agents.b, await access_token(client, agents.a))
        after_first = await chains_created(client)

        await delegate(client, agents.c, first)

        assert after_first == before + 1
        assert await chains_created(client) == after_first


class TestChainRevocation:
    async def test_revoking_the_subject_token_kills_the_delegated_tokens(
        self, client: httpx.AsyncClient, agents: Agents
    ) -> None:
        subject = await access_token(client, agents.a)
        first = await delegate(client, agents.b, subject)
        second = await delegate(client, agents.c, first)
        assert (await me(client, second)).status_code == 200

        revoked = await client.post(
            "/oauth2/revoke", data={"token": subject}, headers=agents.a.basic
        )

        assert revoked.status_code == 200
        for delegated in (first, second):
            assert await introspect(client, delegated) == {"active": False}
            refused = await me(client, delegated)
            assert refused.status_code == 401
            assert 'error="invalid_token"' in refused.headers["www-authenticate"]

    async def test_revoking_the_actor_token_kills_the_delegated_token(
        self, client: httpx.AsyncClient, agents: Agents
    ) -> None:
        subject = await access_token(client, agents.a)
        actor = await access_token(client, agents.b)
        response = await exchange(client, agents.b, subject, actor)
        delegated = response.json()["access_token"]

        revoked = await client.post("/oauth2/revoke", data={"token": actor}, headers=agents.b.basic)

        assert revoked.status_code == 200
        assert (await me(client, delegated)).status_code == 401
        assert await introspect(client, delegated) == {"active": False}
        assert (await me(client, subject)).status_code == 200

    async def test_revoking_the_chain_kills_every_token_of_the_chain_only(
        self, client: httpx.AsyncClient, agents: Agents
    ) -> None:
        subject = await access_token(client, agents.a)
        first = await delegate(client, agents.b, subject)
        second = await delegate(client, agents.c, first)
        chain_id = (await decode_with_published_keys(client, first))["chain_id"]
        org_key = await create_org_key(client, "acme")

        response = await client.post(
            "/v1/orgs/acme/token-revocations",
            json={"kind": "chain", "value": chain_id},
            headers=bearer(org_key),
        )

        assert response.status_code == 201, response.text
        assert response.json()["kind"] == "chain"
        assert response.json()["value"] == chain_id
        for delegated in (first, second):
            assert (await me(client, delegated)).status_code == 401
            assert await introspect(client, delegated) == {"active": False}
        # The subject's own token was never part of the chain.
        assert (await me(client, subject)).status_code == 200

    async def test_suspending_an_actor_kills_the_tokens_it_acts_in(
        self, client: httpx.AsyncClient, agents: Agents
    ) -> None:
        subject = await access_token(client, agents.a)
        first = await delegate(client, agents.b, subject)
        second = await delegate(client, agents.c, first)

        suspended = await client.post(
            f"/v1/orgs/acme/agents/{agents.b.agent['id']}/suspend", headers=ADMIN
        )

        assert suspended.status_code == 200, suspended.text
        for delegated in (first, second):
            assert (await me(client, delegated)).status_code == 401
        assert (await me(client, subject)).status_code == 200
