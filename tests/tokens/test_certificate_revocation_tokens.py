"""Revoking a certificate, or replacing its CA, ends the tokens issued from it at once: the API
refuses them (401 `invalid_token`), introspection calls them inactive, tokens obtained from them
by token exchange (RFC 8693) die with them, and other replicas on the same Redis agree without
waiting. A certificate revoked before its first use is refused at that first use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis

from tabard.api.app import build_runtime, create_app
from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tests.conftest import ADMIN, create_agent, create_org
from tests.pki.support import MTLS, TestCa, self_signed, spiffe_id
from tests.tokens.certificate_support import (
    CAPABILITIES,
    CertifiedAgent,
    acme_bot,
    assert_refused,
    certificate_token,
    holder_login,
    introspected,
    issued_agent,
    me,
    register_certificate,
    revoke_certificate,
    upload_ca,
)
from tests.tokens.support import (
    ISSUER,
    TOKEN_URL,
    access_token,
    agent_client,
    decode_with_published_keys,
)

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


@pytest.fixture
def overrides() -> dict[str, Any]:
    return dict(MTLS)


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
async def bot(client: httpx.AsyncClient) -> CertifiedAgent:
    return await acme_bot(client)


async def assert_alive(
    client: httpx.AsyncClient, token: str, holder: CertifiedAgent | None = None
) -> None:
    response = await me(client, token, holder.header if holder else None)
    assert response.status_code == 200, response.text
    assert (await introspected(client, token))["active"] is True


async def assert_dead(
    client: httpx.AsyncClient, token: str, holder: CertifiedAgent | None = None
) -> None:
    """401 `invalid_token` on the API even with the right certificate, inactive on
    introspection."""
    response = await me(client, token, holder.header if holder else None)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "INVALID_TOKEN"
    challenge = response.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge
    assert 'error_description="token has been revoked"' in challenge
    assert await introspected(client, token) == {"active": False}


async def revoke(client: httpx.AsyncClient, holder: CertifiedAgent) -> None:
    await revoke_certificate(client, ca_id=holder.record["ca_id"], serial=holder.serial)


async def replace_ca(client: httpx.AsyncClient, ca_id: str) -> dict[str, Any]:
    url = f"/v1/orgs/acme/cas/{ca_id}/replace"
    response = await client.post(url, json={"source": "generate"}, headers=ADMIN)
    assert response.status_code == 201, response.text
    ca: dict[str, Any] = response.json()
    return ca


class TestCertificateRevocation:
    async def test_token_issued_from_the_certificate_dies_at_once(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        token = await certificate_token(client, bot)
        await assert_alive(client, token, bot)

        await revoke(client, bot)

        await assert_dead(client, token, bot)

    async def test_token_of_another_certificate_of_the_ca_stays_alive(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        other = await issued_agent(client, "acme", "payroll-bot")
        token = await certificate_token(client, other)

        await revoke(client, bot)

        await assert_alive(client, token, other)

    async def test_token_exchanged_from_the_certificates_token_dies_too(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        actor = await agent_client(client, "acme", "payroll-bot", create_org_too=False)
        # A certificate-bound subject token may be exchanged only by an actor it names.
        subject = await certificate_token(client, bot, audience=[ISSUER, actor.agent["id"]])
        actor_token = await access_token(client, actor)
        form = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "actor_token": actor_token,
            "actor_token_type": ACCESS_TOKEN_TYPE,
        }
        exchanged = await client.post(TOKEN_URL, data=form, headers=actor.basic)
        assert exchanged.status_code == 200, exchanged.text
        delegated = exchanged.json()["access_token"]
        claims = await decode_with_published_keys(client, delegated)
        assert claims["derived_certs"] == [f"{bot.record['ca_id']}/{bot.serial}"]
        await assert_alive(client, delegated)

        await revoke(client, bot)

        await assert_dead(client, delegated)
        await assert_alive(client, actor_token)

    async def test_token_dies_when_the_certificate_is_revoked_by_its_id(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        token = await certificate_token(client, bot)

        await revoke_certificate(client, certificate_id=bot.record["id"])

        await assert_dead(client, token, bot)

    async def test_token_of_a_registered_self_signed_certificate_dies_when_it_is_revoked(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, "acme", "invoice-bot", capabilities=CAPABILITIES)
        certificate, key = self_signed(clock.now(), spiffe_id("acme", "invoice-bot"))
        registered = await register_certificate(client, agent, certificate)
        holder = CertifiedAgent(agent, certificate, key, record=registered)
        token = await certificate_token(client, holder)

        await revoke_certificate(client, certificate_id=registered["id"])

        await assert_dead(client, token, holder)


class TestRevokedCertificateLogin:
    async def test_certificate_revoked_by_ca_and_serial_is_refused(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        await revoke(client, bot)

        response = await holder_login(client, bot)

        await assert_refused(
            client, response, "CERTIFICATE_REVOKED", "Certificate has been revoked"
        )

    async def test_registered_self_signed_certificate_revoked_by_id_is_refused(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, "acme", "invoice-bot", capabilities=CAPABILITIES)
        certificate, key = self_signed(clock.now(), spiffe_id("acme", "invoice-bot"))
        registered = await register_certificate(client, agent, certificate)
        await revoke_certificate(client, certificate_id=registered["id"])

        response = await holder_login(client, CertifiedAgent(agent, certificate, key))

        await assert_refused(
            client, response, "CERTIFICATE_REVOKED", "Certificate has been revoked"
        )

    async def test_certificate_revoked_before_its_first_use_is_refused_at_first_use(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        root = TestCa(clock.now())
        ca = await upload_ca(client, "acme", root)
        agent = await create_agent(client, "acme", "invoice-bot", capabilities=CAPABILITIES)
        certificate, key = root.issue(spiffe_id("acme", "invoice-bot"))
        holder = CertifiedAgent(agent, certificate, key)
        revocation = await revoke_certificate(client, ca_id=ca["id"], serial=holder.serial.upper())
        assert (revocation["certificate_id"], revocation["agent_id"]) == (None, None)

        response = await holder_login(client, holder)

        await assert_refused(
            client, response, "CERTIFICATE_REVOKED", "Certificate has been revoked"
        )


class TestCaReplacement:
    async def test_tokens_from_every_certificate_of_the_ca_die(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        other = await issued_agent(client, "acme", "payroll-bot")
        tokens = [await certificate_token(client, bot), await certificate_token(client, other)]

        await replace_ca(client, bot.record["ca_id"])

        await assert_dead(client, tokens[0], bot)
        await assert_dead(client, tokens[1], other)

    async def test_certificates_of_the_new_ca_log_in(
        self, client: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        await certificate_token(client, bot)  # pins a certificate of the old CA
        new_ca = await replace_ca(client, bot.record["ca_id"])

        renewed = await issued_agent(client, "acme", "payroll-bot")
        token = await certificate_token(client, renewed)

        assert renewed.record["ca_id"] == new_ca["id"]
        await assert_alive(client, token, renewed)


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
    async def test_certificate_revoked_on_one_replica_is_refused_on_the_other_at_once(
        self, client: httpx.AsyncClient, replica: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        token = await certificate_token(client, bot)
        await assert_alive(replica, token, bot)  # the replica has read (and cached) the list

        await revoke(client, bot)

        await assert_dead(replica, token, bot)

    async def test_ca_replaced_on_one_replica_is_refused_on_the_other_at_once(
        self, client: httpx.AsyncClient, replica: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        token = await certificate_token(client, bot)
        await assert_alive(replica, token, bot)

        await replace_ca(client, bot.record["ca_id"])

        await assert_dead(replica, token, bot)

    async def test_login_the_other_replica_remembers_is_refused_there_once_revoked(
        self, client: httpx.AsyncClient, replica: httpx.AsyncClient, bot: CertifiedAgent
    ) -> None:
        assert (await holder_login(replica, bot)).status_code == 200
        assert (await holder_login(replica, bot)).status_code == 200  # remembered there now

        await revoke(client, bot)

        response = await holder_login(replica, bot)
        await assert_refused(
            client, response, "CERTIFICATE_REVOKED", "Certificate has been revoked"
        )
