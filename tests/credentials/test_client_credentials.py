"""Client credentials of agents: secrets shown once and stored as digests, JWKS for
private_key_jwt, expiry, rotation with a grace period, revocation, and the agent lifecycle."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import inspect, select

from tabard.core.clock import FrozenClock
from tabard.core.outbox import OutboxEvent
from tabard.core.runtime import Runtime
from tabard.credentials.errors import ClientAuthenticationFailed
from tabard.credentials.jobs import update_expiring_gauge_once
from tabard.credentials.models import ClientCredential
from tabard.credentials.service import authenticate_secret
from tests.conftest import ADMIN, bearer, create_agent, create_org, create_org_key

DAY = 86400


def credentials_url(agent: dict[str, Any]) -> str:
    return f"/v1/orgs/{agent['org_id']}/agents/{agent['id']}/credentials"


def agent_url(agent: dict[str, Any]) -> str:
    return f"/v1/orgs/{agent['org_id']}/agents/{agent['id']}"


async def create_credential(
    client: httpx.AsyncClient, agent: dict[str, Any], **body: Any
) -> dict[str, Any]:
    response = await client.post(credentials_url(agent), json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    credential: dict[str, Any] = response.json()
    return credential


async def rotate(
    client: httpx.AsyncClient, agent: dict[str, Any], credential: dict[str, Any], **body: Any
) -> httpx.Response:
    url = f"{credentials_url(agent)}/{credential['id']}/rotate"
    return await client.post(url, json=body, headers=ADMIN)


async def revoke(
    client: httpx.AsyncClient, agent: dict[str, Any], credential: dict[str, Any]
) -> httpx.Response:
    return await client.post(f"{credentials_url(agent)}/{credential['id']}/revoke", headers=ADMIN)


async def authenticate(runtime: Runtime, client_id: str, secret: str) -> ClientCredential:
    async with runtime.database.read_only() as session:
        return await authenticate_secret(
            session, runtime.secret_key, client_id, secret, runtime.clock
        )


async def refusal_reason(runtime: Runtime, client_id: str, secret: str) -> str:
    with pytest.raises(ClientAuthenticationFailed) as refused:
        await authenticate(runtime, client_id, secret)
    return refused.value.reason


async def stored_credentials(runtime: Runtime) -> list[ClientCredential]:
    async with runtime.database.read_only() as session:
        return list((await session.execute(select(ClientCredential))).scalars())


async def audit_events(client: httpx.AsyncClient, org_id: str = "acme") -> list[dict[str, Any]]:
    response = await client.get("/v1/audit", params={"org": org_id, "limit": 200}, headers=ADMIN)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["items"]
    return events


def assert_invalid_field(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "VALIDATION_FAILED"
    assert [error["field"] for error in problem["errors"]] == [field]


def p256_public_jwk(kid: str) -> dict[str, Any]:
    jwk = dict(ECKey.generate_key("P-256", private=True).as_dict(private=False))
    return {**jwk, "kid": kid}


def p256_private_jwk(kid: str) -> dict[str, Any]:
    jwk = dict(ECKey.generate_key("P-256", private=True).as_dict(private=True))
    return {**jwk, "kid": kid}


def rsa_public_jwk(bits: int, kid: str) -> dict[str, Any]:
    """Built from `cryptography` directly: joserfc warns about (and so, here, refuses) weak keys."""
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    public = numbers.public_numbers()

    def b64(value: int) -> str:
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return {"kty": "RSA", "n": b64(public.n), "e": b64(public.e), "kid": kid}


def rsa_2048_public_jwk(kid: str) -> dict[str, Any]:
    jwk = dict(RSAKey.generate_key(2048, private=True).as_dict(private=False))
    return {**jwk, "kid": kid}


class TestCreateCredential:
    async def test_client_secret_is_the_default_and_has_recognizable_formats(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        response = await client.post(credentials_url(agent), json={}, headers=ADMIN)
        assert response.status_code == 201, response.text
        credential = response.json()
        assert credential["auth_method"] == "client_secret"
        assert credential["status"] == "active"
        assert credential["agent_id"] == agent["id"]
        assert credential["client_id"].startswith("tbd_cid_")
        secret = credential["client_secret"]
        assert secret.startswith("tbd_cs_")
        assert len(secret) >= 40
        assert credential["secret_prefix"] == secret[:12]
        assert credential["expires_at"] is None

    async def test_secret_is_never_shown_again(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        created = await create_credential(client, agent)
        secret = created["client_secret"]
        listed = await client.get(credentials_url(agent), headers=ADMIN)
        fetched = await client.get(f"{credentials_url(agent)}/{created['id']}", headers=ADMIN)
        for response in (listed, fetched):
            assert response.status_code == 200, response.text
            assert secret not in response.text
        assert all("client_secret" not in item for item in listed.json())
        assert "client_secret" not in fetched.json()
        assert fetched.json()["secret_prefix"] == secret[:12]

    async def test_only_a_digest_of_the_secret_is_stored(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        secret = (await create_credential(client, agent))["client_secret"]
        [stored] = await stored_credentials(runtime)
        assert stored.secret_digest is not None
        assert stored.secret_digest != secret
        for column in inspect(ClientCredential).column_attrs:
            assert secret not in str(getattr(stored, column.key)), column.key

    async def test_expires_in_sets_the_expiry(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        credential = await create_credential(client, agent, expires_in=3600)
        created_at = datetime.fromisoformat(credential["created_at"])
        expires_at = datetime.fromisoformat(credential["expires_at"])
        assert expires_at - created_at == timedelta(seconds=3600)

    async def test_expires_in_below_a_minute_is_422(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        response = await client.post(credentials_url(agent), json={"expires_in": 59}, headers=ADMIN)
        assert response.status_code == 422, response.text
        assert_invalid_field(response, "body.expires_in")

    async def test_decommissioned_agent_cannot_get_a_credential(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        decommissioned = await client.post(f"{agent_url(agent)}/decommission", headers=ADMIN)
        assert decommissioned.status_code == 200, decommissioned.text
        response = await client.post(credentials_url(agent), json={}, headers=ADMIN)
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "AGENT_STATE_CONFLICT"

    async def test_client_secret_credential_with_jwks_is_422(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        body = {"auth_method": "client_secret", "jwks": {"keys": [p256_public_jwk("a")]}}
        response = await client.post(credentials_url(agent), json=body, headers=ADMIN)
        assert_invalid_field(response, "body.auth_method")


class TestCreatePrivateKeyJwtCredential:
    async def test_jwks_of_ec_and_rsa_keys_is_registered_without_a_secret(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        keys = [p256_public_jwk("ec-1"), rsa_2048_public_jwk("rsa-1")]
        body = {"auth_method": "private_key_jwt", "jwks": {"keys": keys}}
        response = await client.post(credentials_url(agent), json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        credential = response.json()
        assert credential["auth_method"] == "private_key_jwt"
        assert credential["client_secret"] is None
        assert credential["secret_prefix"] is None
        assert credential["jwks"] == {"keys": keys}
        assert credential["client_id"].startswith("tbd_cid_")

    async def test_https_jwks_uri_is_registered(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        body = {"auth_method": "private_key_jwt", "jwks_uri": "https://agent.example/jwks.json"}
        response = await client.post(credentials_url(agent), json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        credential = response.json()
        assert credential["jwks_uri"] == "https://agent.example/jwks.json"
        assert credential["jwks"] is None
        assert credential["client_secret"] is None

    async def test_loopback_http_jwks_uri_is_accepted_in_development(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        assert not runtime.settings.is_production
        await create_org(client, "acme")
        agent = await create_agent(client)
        body = {"auth_method": "private_key_jwt", "jwks_uri": "http://127.0.0.1:9/jwks"}
        response = await client.post(credentials_url(agent), json=body, headers=ADMIN)
        assert response.status_code == 201, response.text

    async def test_plain_http_jwks_uri_to_a_remote_host_is_422(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        body = {"auth_method": "private_key_jwt", "jwks_uri": "http://agent.example/jwks"}
        response = await client.post(credentials_url(agent), json=body, headers=ADMIN)
        assert_invalid_field(response, "body.jwks_uri")

    async def test_both_jwks_and_jwks_uri_is_422(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        body = {
            "auth_method": "private_key_jwt",
            "jwks": {"keys": [p256_public_jwk("a")]},
            "jwks_uri": "https://agent.example/jwks.json",
        }
        response = await client.post(credentials_url(agent), json=body, headers=ADMIN)
        assert_invalid_field(response, "body")

    async def test_neither_jwks_nor_jwks_uri_is_422(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        body = {"auth_method": "private_key_jwt"}
        response = await client.post(credentials_url(agent), json=body, headers=ADMIN)
        assert_invalid_field(response, "body")

    async def test_private_key_material_is_422_naming_the_key(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        keys = [p256_public_jwk("public"), p256_private_jwk("private")]
        body = {"auth_method": "private_key_jwt", "jwks": {"keys": keys}}
        response = await client.post(credentials_url(agent), json=body, headers=ADMIN)
        assert_invalid_field(response, "body.jwks.keys.1")
        assert "private" in response.json()["errors"][0]["message"]

    async def test_rsa_1024_key_is_422(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        body = {"auth_method": "private_key_jwt", "jwks": {"keys": [rsa_public_jwk(1024, "r")]}}
        response = await client.post(credentials_url(agent), json=body, headers=ADMIN)
        assert_invalid_field(response, "body.jwks.keys.0")
        assert "2048" in response.json()["errors"][0]["message"]

    async def test_two_keys_without_kid_is_422(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        keys = [p256_public_jwk("a"), p256_public_jwk("b")]
        for key in keys:
            del key["kid"]
        body = {"auth_method": "private_key_jwt", "jwks": {"keys": keys}}
        response = await client.post(credentials_url(agent), json=body, headers=ADMIN)
        assert_invalid_field(response, "body.jwks.keys")


class TestListCredentials:
    async def test_every_credential_of_the_agent_is_listed(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        first = await create_credential(client, agent, name="first")
        second = await create_credential(client, agent, name="second")
        keys = {"keys": [p256_public_jwk("a")]}
        third = await create_credential(client, agent, auth_method="private_key_jwt", jwks=keys)
        response = await client.get(credentials_url(agent), headers=ADMIN)
        assert response.status_code == 200, response.text
        listed = response.json()
        assert {item["id"] for item in listed} == {first["id"], second["id"], third["id"]}
        assert len({item["client_id"] for item in listed}) == 3

    async def test_credentials_of_another_agent_are_not_listed(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        other = await create_agent(client, name="other-bot")
        await create_credential(client, other)
        response = await client.get(credentials_url(agent), headers=ADMIN)
        assert response.json() == []


class TestAuthenticateSecret:
    async def test_current_secret_authenticates(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        created = await create_credential(client, agent)
        credential = await authenticate(runtime, created["client_id"], created["client_secret"])
        assert credential.id == created["id"]
        assert credential.agent_id == agent["id"]

    async def test_wrong_secret_is_a_secret_mismatch(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        created = await create_credential(client, agent)
        wrong = created["client_secret"][:-4] + "AAAA"
        assert wrong != created["client_secret"]
        assert await refusal_reason(runtime, created["client_id"], wrong) == "secret_mismatch"

    async def test_unknown_client_id_is_an_unknown_client(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        created = await create_credential(client, agent)
        reason = await refusal_reason(runtime, "tbd_cid_" + "0" * 32, created["client_secret"])
        assert reason == "unknown_client"

    async def test_secret_of_another_credential_is_a_secret_mismatch(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        first = await create_credential(client, agent, name="first")
        second = await create_credential(client, agent, name="second")
        reason = await refusal_reason(runtime, first["client_id"], second["client_secret"])
        assert reason == "secret_mismatch"

    async def test_private_key_jwt_client_id_is_an_unknown_client(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        secret = (await create_credential(client, agent))["client_secret"]
        keys = {"keys": [p256_public_jwk("a")]}
        jwt_client = await create_credential(
            client, agent, auth_method="private_key_jwt", jwks=keys
        )
        assert await refusal_reason(runtime, jwt_client["client_id"], secret) == "unknown_client"

    async def test_expired_credential_is_refused(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        created = await create_credential(client, agent, expires_in=3600)
        client_id, secret = created["client_id"], created["client_secret"]
        await authenticate(runtime, client_id, secret)
        clock.advance(3601)
        assert await refusal_reason(runtime, client_id, secret) == "credential_expired"

    async def test_suspended_agent_is_refused_until_reactivated(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        created = await create_credential(client, agent)
        client_id, secret = created["client_id"], created["client_secret"]
        suspended = await client.post(f"{agent_url(agent)}/suspend", headers=ADMIN)
        assert suspended.status_code == 200, suspended.text
        assert await refusal_reason(runtime, client_id, secret) == "agent_suspended"
        reactivated = await client.post(f"{agent_url(agent)}/reactivate", headers=ADMIN)
        assert reactivated.status_code == 200, reactivated.text
        assert (await authenticate(runtime, client_id, secret)).id == created["id"]


class TestRotateSecret:
    async def test_without_grace_the_old_secret_stops_at_once(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        created = await create_credential(client, agent)
        response = await rotate(client, agent, created)
        assert response.status_code == 200, response.text
        rotated = response.json()
        new_secret = rotated["client_secret"]
        assert new_secret.startswith("tbd_cs_")
        assert new_secret != created["client_secret"]
        assert rotated["client_id"] == created["client_id"]
        assert rotated["secret_prefix"] == new_secret[:12]
        assert rotated["rotated_at"] is not None
        assert rotated["previous_secret_expires_at"] is None
        assert (await authenticate(runtime, created["client_id"], new_secret)).id == created["id"]
        old = created["client_secret"]
        assert await refusal_reason(runtime, created["client_id"], old) == "secret_mismatch"

    async def test_with_grace_both_secrets_work_until_it_ends(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        created = await create_credential(client, agent)
        client_id, old_secret = created["client_id"], created["client_secret"]
        response = await rotate(client, agent, created, grace_period_seconds=600)
        assert response.status_code == 200, response.text
        assert response.json()["previous_secret_expires_at"] is not None
        new_secret = response.json()["client_secret"]
        await authenticate(runtime, client_id, old_secret)
        await authenticate(runtime, client_id, new_secret)
        clock.advance(601)
        await authenticate(runtime, client_id, new_secret)
        assert await refusal_reason(runtime, client_id, old_secret) == "secret_mismatch"

    async def test_grace_longer_than_a_day_is_422(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        created = await create_credential(client, agent)
        response = await rotate(client, agent, created, grace_period_seconds=DAY + 1)
        assert_invalid_field(response, "body.grace_period_seconds")

    async def test_revoked_credential_cannot_be_rotated(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        created = await create_credential(client, agent)
        assert (await revoke(client, agent, created)).status_code == 200
        response = await rotate(client, agent, created)
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "CREDENTIAL_REVOKED"

    async def test_private_key_jwt_credential_has_no_secret_to_rotate(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        keys = {"keys": [p256_public_jwk("a")]}
        created = await create_credential(client, agent, auth_method="private_key_jwt", jwks=keys)
        response = await rotate(client, agent, created)
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "CREDENTIAL_METHOD_MISMATCH"


class TestRevokeCredential:
    async def test_revoked_credential_is_refused(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        created = await create_credential(client, agent)
        response = await revoke(client, agent, created)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "revoked"
        assert response.json()["revoked_at"] is not None
        reason = await refusal_reason(runtime, created["client_id"], created["client_secret"])
        assert reason == "credential_revoked"

    async def test_revoking_twice_is_409(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        created = await create_credential(client, agent)
        await revoke(client, agent, created)
        again = await revoke(client, agent, created)
        assert again.status_code == 409, again.text
        assert again.json()["code"] == "CREDENTIAL_REVOKED"

    async def test_revoking_one_leaves_the_others_working(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        revoked = await create_credential(client, agent, name="revoked")
        kept = await create_credential(client, agent, name="kept")
        await revoke(client, agent, revoked)
        assert (await authenticate(runtime, kept["client_id"], kept["client_secret"])).id == kept[
            "id"
        ]


class TestDecommissionAgent:
    async def test_every_credential_of_the_agent_is_revoked(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        first = await create_credential(client, agent, name="first")
        second = await create_credential(client, agent, name="second")
        response = await client.post(f"{agent_url(agent)}/decommission", headers=ADMIN)
        assert response.status_code == 200, response.text
        listed = (await client.get(credentials_url(agent), headers=ADMIN)).json()
        assert len(listed) == 2
        for item in listed:
            assert item["status"] == "revoked"
            assert item["revoked_at"] is not None
        for created in (first, second):
            reason = await refusal_reason(runtime, created["client_id"], created["client_secret"])
            assert reason == "credential_revoked"

    async def test_other_agents_keep_their_credentials(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        other = await create_agent(client, name="other-bot")
        await create_credential(client, agent)
        kept = await create_credential(client, other)
        await client.post(f"{agent_url(agent)}/decommission", headers=ADMIN)
        await authenticate(runtime, kept["client_id"], kept["client_secret"])

    async def test_revocations_are_audited_as_decommissioning(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        first = await create_credential(client, agent, name="first")
        second = await create_credential(client, agent, name="second")
        await client.post(f"{agent_url(agent)}/decommission", headers=ADMIN)
        revoked = [e for e in await audit_events(client) if e["action"] == "credential.revoked"]
        assert {event["target"] for event in revoked} == {first["id"], second["id"]}
        for event in revoked:
            assert event["details"]["reason"] == "agent_decommissioned"


class TestUpdateCredential:
    async def test_jwks_of_a_private_key_jwt_credential_is_replaced(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        keys = {"keys": [p256_public_jwk("old")]}
        created = await create_credential(client, agent, auth_method="private_key_jwt", jwks=keys)
        replacement = {"keys": [p256_public_jwk("new-ec"), rsa_2048_public_jwk("new-rsa")]}
        url = f"{credentials_url(agent)}/{created['id']}"
        response = await client.patch(url, json={"jwks": replacement}, headers=ADMIN)
        assert response.status_code == 200, response.text
        assert response.json()["jwks"] == replacement
        assert (await client.get(url, headers=ADMIN)).json()["jwks"] == replacement

    async def test_jwks_on_a_client_secret_credential_is_409(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        created = await create_credential(client, agent)
        url = f"{credentials_url(agent)}/{created['id']}"
        body = {"jwks": {"keys": [p256_public_jwk("a")]}}
        response = await client.patch(url, json=body, headers=ADMIN)
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "CREDENTIAL_METHOD_MISMATCH"

    async def test_replacement_jwks_is_validated(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        keys = {"keys": [p256_public_jwk("old")]}
        created = await create_credential(client, agent, auth_method="private_key_jwt", jwks=keys)
        url = f"{credentials_url(agent)}/{created['id']}"
        body = {"jwks": {"keys": [p256_private_jwk("leaked")]}}
        response = await client.patch(url, json=body, headers=ADMIN)
        assert_invalid_field(response, "body.jwks.keys.0")
        assert (await client.get(url, headers=ADMIN)).json()["jwks"] == keys


class TestCredentialAudit:
    async def test_each_change_is_audited_with_the_credential_as_target(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        created = await create_credential(client, agent)
        await rotate(client, agent, created, grace_period_seconds=600)
        await revoke(client, agent, created)
        events = await audit_events(client)
        by_action = {event["action"]: event for event in events}
        for action in ("credential.created", "credential.rotated", "credential.revoked"):
            assert by_action[action]["target"] == created["id"]
            assert by_action[action]["details"]["agent_id"] == agent["id"]
        assert by_action["credential.revoked"]["details"]["reason"] == "revoked"
        assert by_action["credential.rotated"]["details"]["grace_period_seconds"] == 600

    async def test_audit_details_name_the_public_client_id(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        created = await create_credential(client, agent)
        [event] = [e for e in await audit_events(client) if e["action"] == "credential.created"]
        # A client_id is public (RFC 6749 §2.2): redacting it hides which client changed.
        assert event["details"]["client_id"] == created["client_id"]

    async def test_no_secret_reaches_the_audit_log_or_the_outbox(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        created = await create_credential(client, agent)
        rotated = (await rotate(client, agent, created, grace_period_seconds=600)).json()
        await revoke(client, agent, created)
        secrets = [created["client_secret"], rotated["client_secret"]]
        listed = await client.get("/v1/audit", params={"org": "acme"}, headers=ADMIN)
        exported = await client.get("/v1/audit/export", params={"org": "acme"}, headers=ADMIN)
        assert exported.status_code == 200, exported.text
        async with runtime.database.read_only() as session:
            outbox = [str(e.data) for e in (await session.execute(select(OutboxEvent))).scalars()]
        assert any("credential.rotated" in line for line in exported.text.splitlines())
        for secret in secrets:
            assert secret not in listed.text
            assert secret not in exported.text
            assert all(secret not in data for data in outbox)


class TestExpiringGauge:
    async def test_counts_active_credentials_expiring_within_a_week(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        await create_credential(client, agent, name="one-day", expires_in=DAY)
        await create_credential(client, agent, name="thirty-days", expires_in=30 * DAY)
        await create_credential(client, agent, name="forever")
        revoked = await create_credential(client, agent, name="two-days", expires_in=2 * DAY)
        await revoke(client, agent, revoked)
        assert await update_expiring_gauge_once(runtime.database, runtime.clock) == 1
        token = runtime.settings.metrics_token
        headers = bearer(token.get_secret_value()) if token is not None else {}
        response = await client.get("/metrics", headers=headers)
        assert response.status_code == 200, response.text
        assert (
            'tabard_credentials_expiring_soon{kind="client_credential"} 1.0'
            in response.text.splitlines()
        )

    async def test_already_expired_credentials_are_not_counted(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        await create_credential(client, agent, expires_in=3600)
        assert await update_expiring_gauge_once(runtime.database, runtime.clock) == 1
        clock.advance(3601)
        assert await update_expiring_gauge_once(runtime.database, runtime.clock) == 0


class TestTenantIsolation:
    async def test_another_org_gets_404_on_every_credential_route(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        intruder = bearer(await create_org_key(client, "globex"))
        agent = await create_agent(client)
        created = await create_credential(client, agent, name="mine")
        for org_id in ("acme", "globex"):
            base = f"/v1/orgs/{org_id}/agents/{agent['id']}/credentials"
            one = f"{base}/{created['id']}"
            responses = {
                "create": await client.post(base, json={}, headers=intruder),
                "list": await client.get(base, headers=intruder),
                "get": await client.get(one, headers=intruder),
                "patch": await client.patch(one, json={"name": "owned"}, headers=intruder),
                "rotate": await client.post(f"{one}/rotate", json={}, headers=intruder),
                "revoke": await client.post(f"{one}/revoke", headers=intruder),
            }
            for route, response in responses.items():
                assert response.status_code == 404, (org_id, route, response.text)
        [stored] = await stored_credentials(runtime)
        assert stored.name == "mine"
        assert stored.status == "active"
        assert stored.rotated_at is None
        await authenticate(runtime, created["client_id"], created["client_secret"])

    async def test_own_org_key_manages_its_agents_credentials(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        owner = bearer(await create_org_key(client, "acme"))
        agent = await create_agent(client)
        response = await client.post(credentials_url(agent), json={}, headers=owner)
        assert response.status_code == 201, response.text
        created = response.json()
        listed = await client.get(credentials_url(agent), headers=owner)
        assert [item["id"] for item in listed.json()] == [created["id"]]
        await authenticate(runtime, created["client_id"], created["client_secret"])
