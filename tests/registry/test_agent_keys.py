"""Agent keys: public JWKs registered or generated (private key shown once), known by thumbprint."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any
from urllib.parse import quote

import httpx
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key
from sqlalchemy import select

from tabard.core.outbox import OutboxEvent
from tabard.core.runtime import Runtime
from tabard.registry.did_key import did_key_from_jwk
from tests.conftest import ADMIN, bearer, create_agent, create_org, create_org_key


def keys_url(agent: dict[str, Any]) -> str:
    return f"/v1/orgs/{agent['org_id']}/agents/{agent['id']}/keys"


def ed25519_public_jwk() -> dict[str, Any]:
    return dict(OKPKey.generate_key("Ed25519", private=True).as_dict(private=False))


def p256_public_jwk() -> dict[str, Any]:
    return dict(ECKey.generate_key("P-256", private=True).as_dict(private=False))


def rfc7638_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3: SHA-256 over the required members, sorted, no whitespace; base64url."""
    required = ("crv", "kty", "x") if jwk["kty"] == "OKP" else ("crv", "kty", "x", "y")
    canonical = json.dumps({name: jwk[name] for name in required}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def has_member(value: Any, member: str) -> bool:
    """Whether any JSON object nested anywhere in `value` has the member `member`."""
    if isinstance(value, dict):
        return member in value or any(has_member(item, member) for item in value.values())
    if isinstance(value, list):
        return any(has_member(item, member) for item in value)
    return False


async def assert_invalid_key(
    client: httpx.AsyncClient, agent: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    response = await client.post(keys_url(agent), json=body, headers=ADMIN)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "INVALID_KEY"
    assert [error["field"] for error in problem["errors"]] == [field]


class TestRegisterKey:
    async def test_ed25519_key_is_known_by_its_thumbprint_and_did_key(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        jwk = ed25519_public_jwk()
        response = await client.post(keys_url(agent), json={"jwk": jwk}, headers=ADMIN)
        assert response.status_code == 201, response.text
        key = response.json()
        assert key["kid"] == rfc7638_thumbprint(jwk)
        assert key["kid"] == import_key(jwk).thumbprint()
        assert key["algorithm"] == "Ed25519"
        assert key["did_key"].startswith("did:key:z6Mk")
        assert key["did_key"] == did_key_from_jwk(jwk)
        assert key["public_jwk"] == {"kty": "OKP", "crv": "Ed25519", "x": jwk["x"]}
        assert key["agent_id"] == agent["id"]
        assert key["revoked_at"] is None
        assert "private_jwk" not in key

    async def test_p256_key_is_known_by_its_thumbprint_and_did_key(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        jwk = p256_public_jwk()
        response = await client.post(keys_url(agent), json={"jwk": jwk}, headers=ADMIN)
        assert response.status_code == 201, response.text
        key = response.json()
        assert key["kid"] == rfc7638_thumbprint(jwk)
        assert key["kid"] == import_key(jwk).thumbprint()
        assert key["algorithm"] == "P-256"
        assert key["did_key"].startswith("did:key:zDn")
        assert key["public_jwk"] == {"kty": "EC", "crv": "P-256", "x": jwk["x"], "y": jwk["y"]}

    async def test_org_key_registers_a_key_for_its_own_agent(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        secret = await create_org_key(client, "acme")
        agent = await create_agent(client)
        response = await client.post(
            keys_url(agent), json={"jwk": ed25519_public_jwk()}, headers=bearer(secret)
        )
        assert response.status_code == 201, response.text

    async def test_change_is_audited_and_announced(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        kid = (
            await client.post(keys_url(agent), json={"jwk": p256_public_jwk()}, headers=ADMIN)
        ).json()["kid"]
        events = (
            await client.get(
                "/v1/audit", params={"org": "acme", "action": "agent.key.added"}, headers=ADMIN
            )
        ).json()["items"]
        assert [(e["target"], e["details"]["kid"]) for e in events] == [(agent["id"], kid)]
        async with runtime.database.read_only() as session:
            rows = (
                (
                    await session.execute(
                        select(OutboxEvent).where(OutboxEvent.type == "agent.key.added")
                    )
                )
                .scalars()
                .all()
            )
        assert [(row.subject, row.data["kid"]) for row in rows] == [(agent["id"], kid)]


class TestRejectedKeys:
    async def test_private_key_material_is_refused(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        private = dict(OKPKey.generate_key("Ed25519", private=True).as_dict(private=True))
        assert "d" in private
        await assert_invalid_key(client, agent, {"jwk": private}, "body.jwk")

    async def test_rsa_key_is_refused(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        rsa = dict(RSAKey.generate_key(2048, private=True).as_dict(private=False))
        await assert_invalid_key(client, agent, {"jwk": rsa}, "body.jwk")

    async def test_secp256k1_key_is_refused(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        k1 = dict(ECKey.generate_key("secp256k1", private=True).as_dict(private=False))
        await assert_invalid_key(client, agent, {"jwk": k1}, "body.jwk")

    async def test_ec_point_off_the_curve_is_refused(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        jwk = p256_public_jwk()
        y = bytearray(base64.urlsafe_b64decode(jwk["y"] + "="))
        y[-1] ^= 0x01  # (x, y) and (x, y ^ 1) cannot both satisfy the curve equation
        jwk["y"] = base64.urlsafe_b64encode(bytes(y)).rstrip(b"=").decode()
        await assert_invalid_key(client, agent, {"jwk": jwk}, "body.jwk")

    async def test_garbage_x_is_refused(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        for x in ("!!not*base64url!!", "AAAA", ""):
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": x}
            await assert_invalid_key(client, agent, {"jwk": jwk}, "body.jwk")

    async def test_both_jwk_and_generate_is_refused(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        body = {"jwk": ed25519_public_jwk(), "generate": "Ed25519"}
        await assert_invalid_key(client, agent, body, "body")

    async def test_neither_jwk_nor_generate_is_refused(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        await assert_invalid_key(client, agent, {}, "body")

    async def test_nothing_is_stored_for_a_refused_key(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        await client.post(keys_url(agent), json={"jwk": {"kty": "RSA"}}, headers=ADMIN)
        assert (await client.get(keys_url(agent), headers=ADMIN)).json() == []

    async def test_same_key_twice_on_one_agent_is_409(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        jwk = ed25519_public_jwk()
        first = await client.post(keys_url(agent), json={"jwk": jwk}, headers=ADMIN)
        assert first.status_code == 201
        again = await client.post(keys_url(agent), json={"jwk": jwk}, headers=ADMIN)
        assert again.status_code == 409
        assert again.json()["code"] == "KEY_ALREADY_REGISTERED"

    async def test_same_key_on_another_agent_is_409(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        first_agent = await create_agent(client, "acme", "first")
        other_agent = await create_agent(client, "globex", "other")
        jwk = p256_public_jwk()
        first = await client.post(keys_url(first_agent), json={"jwk": jwk}, headers=ADMIN)
        assert first.status_code == 201
        again = await client.post(keys_url(other_agent), json={"jwk": jwk}, headers=ADMIN)
        assert again.status_code == 409
        assert again.json()["code"] == "KEY_ALREADY_REGISTERED"
        assert (await client.get(keys_url(other_agent), headers=ADMIN)).json() == []


class TestGenerateKey:
    async def test_ed25519_private_key_is_in_the_response(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        response = await client.post(keys_url(agent), json={"generate": "Ed25519"}, headers=ADMIN)
        assert response.status_code == 201, response.text
        key = response.json()
        private = key["private_jwk"]
        assert private["kty"] == "OKP"
        assert private["crv"] == "Ed25519"
        assert private["x"] == key["public_jwk"]["x"]
        assert private["kid"] == key["kid"] == rfc7638_thumbprint(key["public_jwk"])
        assert key["algorithm"] == "Ed25519"
        assert key["did_key"].startswith("did:key:z6Mk")
        assert response.text.count(private["d"]) == 1
        assert not has_member(key["public_jwk"], "d")

    async def test_p256_private_key_is_in_the_response(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        response = await client.post(keys_url(agent), json={"generate": "P-256"}, headers=ADMIN)
        assert response.status_code == 201, response.text
        key = response.json()
        private = key["private_jwk"]
        assert (private["kty"], private["crv"]) == ("EC", "P-256")
        assert (private["x"], private["y"]) == (key["public_jwk"]["x"], key["public_jwk"]["y"])
        assert key["algorithm"] == "P-256"
        assert key["did_key"].startswith("did:key:zDn")
        assert response.text.count(private["d"]) == 1

    async def test_unknown_algorithm_is_422(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        response = await client.post(keys_url(agent), json={"generate": "RSA"}, headers=ADMIN)
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "body.generate"

    async def test_no_other_endpoint_returns_private_key_material(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        secret = await create_org_key(client, "acme")
        agent = await create_agent(
            client,
            visibility="public",
            endpoint_url="https://agents.acme.example/invoice",
            capabilities=["invoices:read"],
        )
        url = keys_url(agent)
        private_values: list[str] = []
        generated: list[dict[str, Any]] = []
        for algorithm in ("Ed25519", "P-256", "Ed25519"):
            created = await client.post(url, json={"generate": algorithm}, headers=ADMIN)
            assert created.status_code == 201
            generated.append(created.json())
            private_values.append(created.json()["private_jwk"]["d"])
        revoked_kid = generated[2]["kid"]
        did = agent["did"]

        responses = [
            await client.post(url, json={"jwk": ed25519_public_jwk()}, headers=ADMIN),
            await client.get(url, headers=ADMIN),
            await client.delete(f"{url}/{revoked_kid}", headers=ADMIN),
            await client.get(f"/v1/orgs/acme/agents/{agent['id']}", headers=ADMIN),
            await client.get("/v1/orgs/acme/agents", headers=ADMIN),
            await client.get("/v1/discovery/agents"),
            await client.get("/v1/discovery/agents", headers=bearer(secret)),
            await client.get(f"/agents/{agent['id']}/did.json"),
            await client.get(f"/v1/identifiers/{quote(did, safe='')}"),
            await client.get(f"/v1/identifiers/{quote(generated[0]['did_key'], safe='')}"),
            await client.get(f"/agents/{agent['id']}/agent-card.json"),
            await client.get("/.well-known/did.json"),
            await client.get("/.well-known/jwks.json"),
            await client.get("/v1/audit", params={"org": "acme", "limit": 100}, headers=ADMIN),
        ]
        for response in responses:
            assert response.status_code in (200, 201), (response.url, response.text)
        texts = [response.text for response in responses]
        async with runtime.database.read_only() as session:
            rows = (await session.execute(select(OutboxEvent))).scalars().all()
        texts += [json.dumps(row.data) for row in rows]
        assert len(rows) >= len(generated)

        for text in texts:
            assert not has_member(json.loads(text), "d"), text
            assert "private_jwk" not in text
            for value in private_values:
                assert value not in text


class TestListKeys:
    async def test_keys_are_listed_oldest_first_with_public_parts_only(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        first = (
            await client.post(keys_url(agent), json={"generate": "Ed25519"}, headers=ADMIN)
        ).json()
        second = (
            await client.post(keys_url(agent), json={"jwk": p256_public_jwk()}, headers=ADMIN)
        ).json()
        listed = (await client.get(keys_url(agent), headers=ADMIN)).json()
        assert {key["kid"] for key in listed} == {first["kid"], second["kid"]}
        assert all("private_jwk" not in key for key in listed)

    async def test_unknown_agent_is_404(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        response = await client.get("/v1/orgs/acme/agents/no-such-agent/keys", headers=ADMIN)
        assert response.status_code == 404
        assert response.json()["code"] == "AGENT_NOT_FOUND"


class TestRevokeKey:
    async def test_revoked_key_stays_listed_with_its_revocation_time(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        kid = (
            await client.post(keys_url(agent), json={"generate": "P-256"}, headers=ADMIN)
        ).json()["kid"]
        response = await client.delete(f"{keys_url(agent)}/{kid}", headers=ADMIN)
        assert response.status_code == 200, response.text
        assert response.json()["revoked_at"] is not None
        listed = (await client.get(keys_url(agent), headers=ADMIN)).json()
        assert [(key["kid"], key["revoked_at"] is not None) for key in listed] == [(kid, True)]

    async def test_revoking_twice_is_404(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        kid = (
            await client.post(keys_url(agent), json={"generate": "Ed25519"}, headers=ADMIN)
        ).json()["kid"]
        await client.delete(f"{keys_url(agent)}/{kid}", headers=ADMIN)
        again = await client.delete(f"{keys_url(agent)}/{kid}", headers=ADMIN)
        assert again.status_code == 404
        assert again.json()["code"] == "KEY_NOT_FOUND"

    async def test_unknown_kid_is_404(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        response = await client.delete(f"{keys_url(agent)}/no-such-kid", headers=ADMIN)
        assert response.status_code == 404
        assert response.json()["code"] == "KEY_NOT_FOUND"


class TestDecommissionedAgentKeys:
    async def test_decommission_revokes_every_key(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        for body in ({"generate": "Ed25519"}, {"jwk": p256_public_jwk()}):
            assert (await client.post(keys_url(agent), json=body, headers=ADMIN)).is_success
        decommissioned = await client.post(
            f"/v1/orgs/acme/agents/{agent['id']}/decommission", headers=ADMIN
        )
        assert decommissioned.status_code == 200, decommissioned.text
        listed = (await client.get(keys_url(agent), headers=ADMIN)).json()
        assert len(listed) == 2
        assert all(key["revoked_at"] is not None for key in listed)

    async def test_adding_a_key_is_409(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        await client.post(f"/v1/orgs/acme/agents/{agent['id']}/decommission", headers=ADMIN)
        for body in ({"generate": "Ed25519"}, {"jwk": ed25519_public_jwk()}):
            response = await client.post(keys_url(agent), json=body, headers=ADMIN)
            assert response.status_code == 409
            assert response.json()["code"] == "AGENT_STATE_CONFLICT"

    async def test_revoking_a_key_is_409(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client)
        kid = (
            await client.post(keys_url(agent), json={"generate": "Ed25519"}, headers=ADMIN)
        ).json()["kid"]
        await client.post(f"/v1/orgs/acme/agents/{agent['id']}/decommission", headers=ADMIN)
        response = await client.delete(f"{keys_url(agent)}/{kid}", headers=ADMIN)
        assert response.status_code == 409
        assert response.json()["code"] == "AGENT_STATE_CONFLICT"


class TestKeyIsolation:
    async def test_another_orgs_key_gets_404_on_every_key_route(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        intruder = bearer(await create_org_key(client, "globex"))
        agent = await create_agent(client)
        kid = (
            await client.post(keys_url(agent), json={"generate": "Ed25519"}, headers=ADMIN)
        ).json()["kid"]
        # Through the victim's org path, and through the intruder's own org path.
        paths = {
            keys_url(agent): "ORG_NOT_FOUND",
            f"/v1/orgs/globex/agents/{agent['id']}/keys": "AGENT_NOT_FOUND",
        }
        for base, code in paths.items():
            attempts = [
                await client.post(base, json={"jwk": ed25519_public_jwk()}, headers=intruder),
                await client.post(base, json={"generate": "P-256"}, headers=intruder),
                await client.get(base, headers=intruder),
                await client.delete(f"{base}/{kid}", headers=intruder),
            ]
            for response in attempts:
                assert response.status_code == 404, (response.request.url, response.text)
                assert response.json()["code"] == code
        listed = (await client.get(keys_url(agent), headers=ADMIN)).json()
        assert [(key["kid"], key["revoked_at"]) for key in listed] == [(kid, None)]
