"""Revocation bites at once (RFC 7009 and Tabard's org revocations), on every replica.

Tokens are revoked through the real endpoints and hooks, then presented to `/v1/me` (the API's
authenticated smoke call) and to introspection. Replicas are two apps over one database and one
Redis database; losing Redis is an actual FLUSHDB.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis
from joserfc import jwt
from joserfc.jwk import ECKey

from tabard.api.app import build_runtime, create_app
from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tabard.core.context import SYSTEM, Context
from tabard.core.runtime import Runtime
from tabard.tokens.revocation import LONGEST_TOKEN_LIFETIME, RevocationKind, revoke
from tests.conftest import ADMIN, bearer, create_org, create_org_key
from tests.tokens.support import (
    ISSUER,
    TOKEN_URL,
    AgentClient,
    access_token,
    agent_client,
    decode_with_published_keys,
    request_token,
)

REVOKE_URL = "/oauth2/revoke"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


@pytest.fixture
def kv_backend() -> str:
    return "memory"


@pytest.fixture
def settings(settings: Settings, kv_backend: str, request: pytest.FixtureRequest) -> Settings:
    """The shared settings; on Redis, the emptied database of TABARD_TEST_REDIS_URL."""
    if kv_backend == "memory":
        return settings
    url: str = request.getfixturevalue("redis_url")
    with redis.Redis.from_url(url) as connection:
        connection.flushdb()
    return settings.model_copy(update={"kv_backend": "redis", "redis_url": url})


@pytest.fixture
async def acme(client: httpx.AsyncClient) -> AgentClient:
    return await agent_client(client, "acme", "invoice-bot")


async def me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/v1/me", headers=bearer(token))


async def active(client: httpx.AsyncClient, token: str) -> bool:
    response = await client.post("/oauth2/introspect", data={"token": token}, headers=ADMIN)
    assert response.status_code == 200, response.text
    answer: bool = response.json()["active"]
    return answer


async def assert_alive(client: httpx.AsyncClient, token: str) -> None:
    response = await me(client, token)
    assert response.status_code == 200, response.text
    assert await active(client, token) is True


async def assert_dead(client: httpx.AsyncClient, token: str, description: str = "") -> None:
    """401 `invalid_token` on the API (RFC 6750 §3.1) and inactive on introspection."""
    response = await me(client, token)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "INVALID_TOKEN"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    assert f'error_description="{description}' in challenge
    assert await active(client, token) is False


async def revoke_token(
    client: httpx.AsyncClient, token: str, headers: dict[str, str]
) -> httpx.Response:
    return await client.post(REVOKE_URL, data={"token": token}, headers=headers)


async def org_revocation(
    client: httpx.AsyncClient, org_id: str, kind: str, value: str
) -> httpx.Response:
    body = {"kind": kind, "value": value}
    return await client.post(f"/v1/orgs/{org_id}/token-revocations", json=body, headers=ADMIN)


def foreign_jwt() -> str:
    """A well-formed access token signed by a key Tabard never published."""
    claims = {"iss": ISSUER, "sub": "someone", "jti": "x", "exp": int(time.time()) + 600}
    return jwt.encode({"alg": "ES256", "typ": "at+jwt"}, claims, ECKey.generate_key("P-256"))


class TestRevokeEndpoint:
    async def test_holder_revokes_its_token_and_it_dies_at_once(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)
        await assert_alive(client, token)

        response = await revoke_token(client, token, acme.basic)

        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        await assert_dead(client, token, "token has been revoked")

    @pytest.mark.parametrize("token", ["garbage", "eyJ.eyJ.sig", "foreign"])
    async def test_unknown_or_malformed_token_is_a_success(
        self, client: httpx.AsyncClient, acme: AgentClient, token: str
    ) -> None:
        presented = foreign_jwt() if token == "foreign" else token

        response = await revoke_token(client, presented, acme.basic)

        assert response.status_code == 200, response.text

    async def test_another_clients_token_is_refused_and_stays_alive(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        other = await agent_client(client, "acme", "payroll-bot", create_org_too=False)
        token = await access_token(client, acme)

        response = await revoke_token(client, token, other.basic)

        assert response.status_code == 400
        assert response.json()["error"] == "unauthorized_client"
        await assert_alive(client, token)

    async def test_unauthenticated_request_is_invalid_client(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)

        response = await client.post(REVOKE_URL, data={"token": token})

        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
        assert "www-authenticate" in response.headers
        await assert_alive(client, token)

    async def test_org_key_revokes_a_token_of_its_org(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)
        org_key = await create_org_key(client, "acme")

        response = await revoke_token(client, token, bearer(org_key))

        assert response.status_code == 200, response.text
        await assert_dead(client, token)

    async def test_key_of_another_org_cannot_revoke(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)
        await create_org(client, "globex")
        foreign_key = await create_org_key(client, "globex")

        response = await revoke_token(client, token, bearer(foreign_key))

        assert response.status_code == 400, response.text
        assert response.json()["error"] == "unauthorized_client"
        await assert_alive(client, token)


class TestOrgRevocations:
    async def test_revoking_an_agent_kills_its_tokens_and_later_ones_work(
        self, client: httpx.AsyncClient, acme: AgentClient, clock: FrozenClock
    ) -> None:
        token = await access_token(client, acme)

        response = await org_revocation(client, "acme", "agent", acme.agent["id"])

        assert response.status_code == 201, response.text
        assert response.json()["kind"] == "agent"
        await assert_dead(client, token)
        clock.advance(1)  # `iat` has whole seconds: the next second is after the cut-off
        await assert_alive(client, await access_token(client, acme))

    async def test_revoking_a_client_kills_only_that_credentials_tokens(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        url = f"/v1/orgs/acme/agents/{acme.agent['id']}/credentials"
        second = (await client.post(url, json={"name": "spare"}, headers=ADMIN)).json()
        spare = AgentClient(acme.agent, second["client_id"], second["client_secret"], second["id"])
        token = await access_token(client, acme)
        spare_token = await access_token(client, spare)

        response = await org_revocation(client, "acme", "client", acme.client_id)

        assert response.status_code == 201, response.text
        await assert_dead(client, token)
        await assert_alive(client, spare_token)

    @pytest.mark.parametrize("kind", ["agent", "client", "chain"])
    async def test_target_of_another_org_is_not_found(
        self, client: httpx.AsyncClient, acme: AgentClient, kind: str
    ) -> None:
        await create_org(client, "globex")
        subject = await access_token(client, acme)
        targets = {
            "agent": acme.agent["id"],
            "client": acme.client_id,
            "chain": await chain_of(client, acme, subject),
        }

        response = await org_revocation(client, "globex", kind, targets[kind])

        assert response.status_code == 404, response.text
        await assert_alive(client, subject)

    async def test_the_admin_revokes_one_token_by_its_jti(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)
        other = await access_token(client, acme)
        jti = (await decode_with_published_keys(client, token))["jti"]

        response = await org_revocation(client, "acme", "jti", jti)

        assert response.status_code == 201, response.text
        await assert_dead(client, token)
        await assert_alive(client, other)

    async def test_an_org_key_may_not_revoke_by_bare_jti(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)
        jti = (await decode_with_published_keys(client, token))["jti"]
        key = await create_org_key(client, "acme")

        response = await client.post(
            "/v1/orgs/acme/token-revocations",
            json={"kind": "jti", "value": jti},
            headers=bearer(key),
        )

        assert response.status_code == 403, response.text
        assert response.json()["code"] == "NOT_PERMITTED"
        await assert_alive(client, token)


async def chain_of(client: httpx.AsyncClient, actor: AgentClient, subject: str) -> str:
    """The chain id of a delegation of `subject` to `actor` (RFC 8693)."""
    form = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": subject,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "actor_token": await access_token(client, actor),
        "actor_token_type": ACCESS_TOKEN_TYPE,
    }
    response = await client.post(TOKEN_URL, data=form, headers=actor.basic)
    assert response.status_code == 200, response.text
    claims = await decode_with_published_keys(client, response.json()["access_token"])
    chain_id: str = claims["chain_id"]
    return chain_id


class TestHooks:
    async def test_suspended_agent_tokens_die_and_reactivated_agent_tokens_work(
        self, client: httpx.AsyncClient, acme: AgentClient, clock: FrozenClock
    ) -> None:
        token = await access_token(client, acme)
        agent_url = f"/v1/orgs/acme/agents/{acme.agent['id']}"

        assert (await client.post(f"{agent_url}/suspend", headers=ADMIN)).status_code == 200

        await assert_dead(client, token)
        assert (await request_token(client, acme)).status_code == 401
        assert (await client.post(f"{agent_url}/reactivate", headers=ADMIN)).status_code == 200
        clock.advance(1)
        await assert_alive(client, await access_token(client, acme))
        await assert_dead(client, token)

    async def test_decommissioned_agent_tokens_die(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)

        url = f"/v1/orgs/acme/agents/{acme.agent['id']}/decommission"
        assert (await client.post(url, headers=ADMIN)).status_code == 200

        await assert_dead(client, token)

    async def test_revoked_credential_tokens_die(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)

        url = f"/v1/orgs/acme/agents/{acme.agent['id']}/credentials/{acme.credential_id}/revoke"
        assert (await client.post(url, headers=ADMIN)).status_code == 200

        await assert_dead(client, token)

    async def test_suspended_org_tokens_die(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)

        assert (await client.post("/v1/orgs/acme/suspend", headers=ADMIN)).status_code == 200

        await assert_dead(client, token)


class TestSigningKeyRotation:
    async def test_emergency_rotation_kills_tokens_of_previous_keys(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)

        response = await rotate(client, revoke_previous=True)

        assert response.status_code == 200, response.text
        assert response.json()["revoked_kids"]
        await assert_dead(client, token, "token signature is invalid")
        await assert_alive(client, await access_token(client, acme))

    async def test_plain_rotation_keeps_old_tokens_valid(
        self, client: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)

        response = await rotate(client, revoke_previous=False)

        assert response.status_code == 200, response.text
        assert response.json()["revoked_kids"] == []
        await assert_alive(client, token)
        await assert_alive(client, await access_token(client, acme))


async def rotate(client: httpx.AsyncClient, *, revoke_previous: bool) -> httpx.Response:
    body = {"revoke_previous": revoke_previous}
    return await client.post("/v1/admin/signing-keys/rotate", json=body, headers=ADMIN)


@pytest.fixture
async def replica(settings: Settings, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    """A second app on the same database and kv store, as another replica would be."""
    runtime = build_runtime(settings, clock=clock)
    app = create_app(settings, runtime=runtime)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://replica.test") as http:
        yield http
    await runtime.kv.close()
    await runtime.bus.close()
    await runtime.database.close()


@pytest.mark.redis
@pytest.mark.parametrize("kv_backend", ["redis"])
class TestAcrossReplicasOnRedis:
    async def test_revocation_on_one_replica_is_refused_on_the_other_at_once(
        self, client: httpx.AsyncClient, replica: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)
        await assert_alive(replica, token)  # the replica has read (and cached) the list

        assert (await revoke_token(client, token, acme.basic)).status_code == 200

        await assert_dead(replica, token)

    async def test_agent_revocation_on_one_replica_is_refused_on_the_other(
        self, client: httpx.AsyncClient, replica: httpx.AsyncClient, acme: AgentClient
    ) -> None:
        token = await access_token(client, acme)
        await assert_alive(replica, token)

        url = f"/v1/orgs/acme/agents/{acme.agent['id']}/suspend"
        assert (await client.post(url, headers=ADMIN)).status_code == 200

        await assert_dead(replica, token)

    async def test_losing_redis_never_revives_a_revoked_token(
        self,
        client: httpx.AsyncClient,
        replica: httpx.AsyncClient,
        acme: AgentClient,
        settings: Settings,
    ) -> None:
        token = await access_token(client, acme)
        assert (await revoke_token(client, token, acme.basic)).status_code == 200

        with redis.Redis.from_url(settings.redis_url) as connection:
            connection.flushdb()

        await assert_dead(replica, token)
        await assert_dead(client, token)


class TestMemoryKvSync:
    async def test_revocation_written_elsewhere_is_picked_up_after_the_sync_interval(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        acme: AgentClient,
        clock: FrozenClock,
    ) -> None:
        token = await access_token(client, acme)
        await assert_alive(client, token)
        claims: dict[str, Any] = await decode_with_published_keys(client, token)

        # Another process (the CLI, say) cannot reach this process's memory store: no kv.
        async with runtime.database.unit_of_work() as session:
            await revoke(
                session,
                Context(SYSTEM, clock),
                RevocationKind.JTI,
                claims["jti"],
                org_id="acme",
                expires_at=clock.now() + LONGEST_TOKEN_LIFETIME,
                reason="revoked_elsewhere",
            )
        clock.advance(runtime.settings.revocation_sync_seconds + 1)

        await assert_dead(client, token)
