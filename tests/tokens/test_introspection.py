"""Token introspection (RFC 7662) through `/oauth2/introspect` of the real app.

Callers authenticate as a client, with an org key or as the platform admin; whatever a caller may
not know about looks exactly like a dead token: `{"active": false}` and nothing else.
"""

from __future__ import annotations

import httpx
import pytest

from tabard.core.clock import FrozenClock
from tests.conftest import ADMIN, bearer, create_org, create_org_key
from tests.tokens.support import (
    ISSUER,
    AgentClient,
    access_token,
    agent_client,
    decode_with_published_keys,
    request_token,
)

INTROSPECT_URL = "/oauth2/introspect"
INACTIVE = {"active": False}


@pytest.fixture
async def acme(client: httpx.AsyncClient) -> AgentClient:
    return await agent_client(client, "acme", "invoice-bot")


async def introspect(
    client: httpx.AsyncClient, token: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(INTROSPECT_URL, data={"token": token}, headers=headers)


async def answer_of(
    client: httpx.AsyncClient, token: str, headers: dict[str, str]
) -> dict[str, object]:
    response = await introspect(client, token, headers)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    answer: dict[str, object] = response.json()
    return answer


class TestActiveToken:
    async def test_client_learns_the_claims_of_its_own_token(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme, scope="invoices.read")
        claims = await decode_with_published_keys(client, token)

        answer = await answer_of(client, token, acme.basic)

        assert answer == {**claims, "active": True, "token_type": "Bearer"}
        assert answer["sub"] == acme.agent["id"]
        assert answer["client_id"] == acme.client_id
        assert answer["scope"] == "invoices.read"
        assert answer["iss"] == ISSUER

    async def test_org_key_learns_the_claims_of_a_token_of_its_org(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)
        org_key = await create_org_key(client, "acme")

        answer = await answer_of(client, token, bearer(org_key))

        assert answer["active"] is True
        assert answer["jti"] == (await decode_with_published_keys(client, token))["jti"]

    async def test_admin_learns_the_claims_of_any_token(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)

        answer = await answer_of(client, token, ADMIN)

        assert answer["active"] is True
        assert answer["org"] == "acme"
        assert answer["token_type"] == "Bearer"

    async def test_another_client_of_the_same_org_learns_the_claims(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        colleague = await agent_client(client, "acme", "payroll-bot", create_org_too=False)
        token = await access_token(client, acme)

        answer = await answer_of(client, token, colleague.basic)

        assert answer["active"] is True
        assert answer["sub"] == acme.agent["id"]


class TestInactiveToken:
    async def test_revoked_token_is_inactive(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)
        revoked = await client.post("/oauth2/revoke", data={"token": token}, headers=acme.basic)
        assert revoked.status_code == 200

        assert await answer_of(client, token, acme.basic) == INACTIVE
        assert await answer_of(client, token, ADMIN) == INACTIVE

    async def test_expired_token_is_inactive(
        self, client: httpx.AsyncClient, acme: AgentClient, clock: FrozenClock
    ) -> None:
        token = await access_token(client, acme)
        assert (await answer_of(client, token, ADMIN))["active"] is True

        clock.advance(900 + 60)  # past exp and the verifier's leeway

        assert await answer_of(client, token, ADMIN) == INACTIVE

    @pytest.mark.parametrize(
        "token",
        ["not-a-token", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "a.b.c", "eyJ.eyJ.eyJ"],
    )
    async def test_malformed_token_is_inactive(
        self, client: httpx.AsyncClient, acme: AgentClient, token: str
    ) -> None:
        assert await answer_of(client, token, acme.basic) == INACTIVE

    async def test_tampered_token_is_inactive(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        header, payload, signature = (await access_token(client, acme)).split(".")
        flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")

        assert await answer_of(client, f"{header}.{payload}.{flipped}", ADMIN) == INACTIVE

    async def test_id_token_is_not_an_active_access_token(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        response = await request_token(client, acme, scope="openid invoices.read")
        assert response.status_code == 200, response.text

        assert await answer_of(client, response.json()["id_token"], ADMIN) == INACTIVE

    async def test_token_of_another_org_is_inactive_for_its_key(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)
        await create_org(client, "globex")
        foreign_key = await create_org_key(client, "globex")

        assert await answer_of(client, token, bearer(foreign_key)) == INACTIVE

    async def test_token_of_another_org_is_inactive_for_its_clients(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)
        outsider = await agent_client(client, "globex", "invoice-bot")

        assert await answer_of(client, token, outsider.basic) == INACTIVE


class TestCallerAuthentication:
    async def test_unauthenticated_caller_is_invalid_client(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)

        response = await introspect(client, token)

        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
        assert response.headers["www-authenticate"].startswith("Basic")

    @pytest.mark.parametrize("secret", ["tbd_org_" + "x" * 43, "not-the-admin-secret"])
    async def test_wrong_bearer_credential_is_invalid_client(
        self, client: httpx.AsyncClient, acme: AgentClient, secret: str
    ) -> None:
        token = await access_token(client, acme)

        response = await introspect(client, token, bearer(secret))

        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"

    async def test_wrong_client_secret_is_invalid_client(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)
        impostor = AgentClient(acme.agent, acme.client_id, "wrong-secret", acme.credential_id)

        response = await introspect(client, token, impostor.basic)

        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"

    async def test_missing_token_parameter_is_invalid_request(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        response = await client.post(INTROSPECT_URL, data={}, headers=acme.basic)

        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"
