"""POST /v1/register: an agent process presents a registration token once and gets its agent
and its credential, a client secret or a certificate signed from its CSR. An unusable token is
401 `REGISTRATION_TOKEN_INVALID` and creates nothing; a failed registration leaves the token
usable; of concurrent uses exactly one wins. Presets: test_registration_presets.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import text

from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tabard.core.runtime import Runtime
from tests.conftest import ADMIN, bearer, create_agent, create_org, create_org_key
from tests.operations.registration_support import (
    AGENTS,
    acme_token,
    assert_invalid_field,
    assert_invalid_token,
    create_token,
    principal,
    read_agent,
    read_token,
    register,
    registered,
    revoke,
    row_counts,
    token_status,
)
from tests.pki.support import csr_pem, ec_key, generate_ca, spiffe_id


class TestRegister:
    async def test_registering_creates_the_agent_and_a_client_secret_that_works(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        token = await acme_token(client)

        body = await registered(client, token, name="worker", version="1.2.3", description="d")

        assert (body["org_id"], body["agent_name"]) == ("acme", "worker")
        assert body["token_endpoint"] == f"{body['issuer']}/oauth2/token"
        assert body["client_secret"] is not None
        assert body["certificate_pem"] is None
        agent = await read_agent(client, body["agent_id"])
        assert (agent["name"], agent["version"], agent["description"]) == ("worker", "1.2.3", "d")
        assert await row_counts(runtime) == (1, 1, 0)
        who = await principal(client, body["client_id"], body["client_secret"])
        assert (who["kind"], who["id"], who["org_id"]) == ("agent", body["agent_id"], "acme")

    async def test_the_token_is_used_by_the_new_agent(self, client: httpx.AsyncClient) -> None:
        token = await acme_token(client)

        body = await registered(client, token, name="worker")

        read = await read_token(client, token)
        assert (read["status"], read["used_by_agent_id"]) == ("used", body["agent_id"])


class TestCertificateCredential:
    async def test_a_csr_gets_a_pinned_certificate_for_the_agents_spiffe_id(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        token = await acme_token(client)
        await generate_ca(client, "acme")
        key = ec_key()

        body = await registered(
            client, token, name="worker", credential="certificate", csr_pem=csr_pem(key)
        )

        certificate = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        assert uris == [spiffe_id("acme", "worker")]
        assert body["spiffe_id"] == body["client_id"] == spiffe_id("acme", "worker")
        assert certificate.public_key() == key.public_key()
        assert body["client_secret"] is None
        assert body["chain_pem"]
        pin = await client.get(f"{AGENTS}/{body['agent_id']}/certificate-pin", headers=ADMIN)
        assert pin.status_code == 200, pin.text
        der = certificate.public_bytes(serialization.Encoding.DER)
        thumbprint = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=")
        assert pin.json()["thumbprint"] == thumbprint.decode()
        assert await row_counts(runtime) == (1, 0, 1)

    async def test_a_certificate_credential_without_a_csr_is_422_and_creates_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        token = await acme_token(client)
        await generate_ca(client, "acme")

        response = await register(client, token, name="worker", credential="certificate")

        assert_invalid_field(response, "body.csr_pem")
        assert await row_counts(runtime) == (0, 0, 0)
        assert await token_status(client, token) == "active"


class TestUnusableToken:
    async def test_a_used_token_is_invalid(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        token = await acme_token(client)
        await registered(client, token, name="first")
        before = await row_counts(runtime)

        assert_invalid_token(await register(client, token, name="second"))
        assert await row_counts(runtime) == before == (1, 1, 0)

    async def test_an_expired_token_is_invalid(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        token = await create_token(client, expires_in=60)
        clock.advance(60)

        assert_invalid_token(await register(client, token, name="worker"))
        assert await row_counts(runtime) == (0, 0, 0)
        assert await token_status(client, token) == "expired"

    async def test_a_revoked_token_is_invalid(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        token = await acme_token(client)
        assert (await revoke(client, token)).status_code == 204

        assert_invalid_token(await register(client, token, name="worker"))
        assert await row_counts(runtime) == (0, 0, 0)

    async def test_an_unknown_token_is_invalid(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        token = await acme_token(client)
        unknown = {"token": token["token"][:-4] + "AAAA"}

        assert_invalid_token(await register(client, unknown, name="worker"))
        assert await row_counts(runtime) == (0, 0, 0)
        assert await token_status(client, token) == "active"

    async def test_no_authorization_is_401(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")

        response = await client.post("/v1/register", json={"name": "worker"})

        assert response.status_code == 401, response.text
        assert response.json()["code"] == "UNAUTHENTICATED"

    async def test_a_bearer_that_is_no_registration_token_is_401(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        key = await create_org_key(client, "acme")

        response = await client.post("/v1/register", json={"name": "worker"}, headers=bearer(key))

        assert response.status_code == 401, response.text
        assert response.json()["code"] == "UNAUTHENTICATED"
        assert await row_counts(runtime) == (0, 0, 0)

    async def test_a_registration_token_under_another_scheme_is_401(
        self, client: httpx.AsyncClient
    ) -> None:
        token = await acme_token(client)
        headers = {"Authorization": f"Basic {token['token']}"}

        response = await client.post("/v1/register", json={"name": "worker"}, headers=headers)

        assert response.status_code == 401, response.text
        assert await token_status(client, token) == "active"


class TestFailedRegistration:
    async def test_a_taken_name_leaves_the_token_usable(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        token = await acme_token(client)
        await create_agent(client, "acme", "invoice-bot")

        response = await register(client, token, name="invoice-bot")

        assert response.status_code == 409, response.text
        assert response.json()["code"] == "AGENT_ALREADY_EXISTS"
        assert await row_counts(runtime) == (1, 0, 0)
        assert await token_status(client, token) == "active"
        assert (await registered(client, token, name="other-bot"))["agent_name"] == "other-bot"

    async def test_the_tier_agent_limit_leaves_the_token_usable(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        token = await acme_token(client)
        agents = [await create_agent(client, "acme", f"agent-{i}") for i in range(10)]

        response = await register(client, token, name="worker")

        assert response.status_code == 403, response.text
        assert response.json()["code"] == "TIER_AGENT_LIMIT_EXCEEDED"
        assert await token_status(client, token) == "active"
        await client.post(f"{AGENTS}/{agents[0]['id']}/decommission", headers=ADMIN)
        assert (await registered(client, token, name="worker"))["agent_name"] == "worker"

    async def test_a_suspended_org_cannot_register(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        token = await acme_token(client)
        assert (await client.post("/v1/orgs/acme/suspend", headers=ADMIN)).status_code == 200

        response = await register(client, token, name="worker")

        assert response.status_code == 403, response.text
        assert response.json()["code"] == "ORG_SUSPENDED"
        assert await row_counts(runtime) == (0, 0, 0)
        assert await token_status(client, token) == "active"


class TestRegistrationAudit:
    async def test_the_use_is_audited_as_the_token(self, client: httpx.AsyncClient) -> None:
        token = await acme_token(client)

        body = await registered(client, token, name="worker")

        listed = await client.get("/v1/audit", params={"org": "acme"}, headers=ADMIN)
        events = {event["action"]: event for event in listed.json()["items"]}
        used = events["registration_token.used"]
        assert (used["target"], used["details"]["agent_id"]) == (token["id"], body["agent_id"])
        created = events["agent.created"]
        assert (created["actor_kind"], created["actor_id"]) == ("registration_token", token["id"])

    async def test_secrets_never_reach_the_audit_log(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        token = await acme_token(client)
        body = await registered(client, token, name="worker")
        assert_invalid_token(await register(client, token, name="again"))

        export = await client.get("/v1/audit/export", params={"org": "acme"}, headers=ADMIN)

        assert export.status_code == 200, export.text
        assert "registration_token.used" in export.text
        assert "request.denied" in export.text
        for secret in (token["token"], body["client_secret"]):
            assert secret not in export.text
        async with runtime.database.read_only() as session:
            outbox = (await session.execute(text("SELECT data FROM outbox_events"))).scalars()
            published = " ".join(str(data) for data in outbox)
        assert body["agent_id"] in published
        assert token["token"] not in published
        assert body["client_secret"] not in published


@pytest.mark.postgres
@pytest.mark.parametrize("settings", ["postgres"], indirect=True)
class TestConcurrentRegistration:
    """On PostgreSQL only: SQLite serializes writers, so nothing races there."""

    async def test_two_replicas_registering_at_once_with_one_token_create_one_agent(
        self,
        settings: Settings,
        client: httpx.AsyncClient,
        replica: httpx.AsyncClient,
        runtime: Runtime,
    ) -> None:
        """`replica` is a second app on the same database (tests/operations/conftest.py)."""
        assert settings.is_postgres
        token = await acme_token(client)

        responses = await asyncio.gather(
            register(client, token, name="first"), register(replica, token, name="second")
        )

        assert sorted(r.status_code for r in responses) == [201, 401], [r.text for r in responses]
        winner = next(r for r in responses if r.status_code == 201).json()
        loser = next(r for r in responses if r.status_code == 401).json()
        assert loser["code"] == "REGISTRATION_TOKEN_INVALID"
        assert "used" in loser["detail"], loser
        assert await row_counts(runtime) == (1, 1, 0)
        assert (await read_token(client, token))["used_by_agent_id"] == winner["agent_id"]
