"""DID documents (W3C DID Core 1.0, did:web) of agents and of the registry, and DID resolution."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any
from urllib.parse import quote

import base58
import httpx
import pydid
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc.jwk import ECKey, OKPKey
from pydid.verification_method import JsonWebKey2020
from sqlalchemy import select

from tabard.core.context import Actor, ActorKind, Context
from tabard.core.outbox import OutboxEvent
from tabard.core.runtime import Runtime
from tabard.registry import service
from tabard.registry.errors import DidConflict
from tabard.registry.schemas import AgentCreate
from tests.conftest import ADMIN, bearer, create_agent, create_org, create_org_key

REGISTRY_DID = "did:web:127.0.0.1%3A8080"
PUBLIC_URL = "http://127.0.0.1:8080"
ENDPOINT = "https://agents.acme.example/a2a"


async def generate_key(
    client: httpx.AsyncClient, agent: dict[str, Any], algorithm: str
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/orgs/{agent['org_id']}/agents/{agent['id']}/keys",
        json={"generate": algorithm},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    key: dict[str, Any] = response.json()
    return key


async def decommission(client: httpx.AsyncClient, agent: dict[str, Any]) -> None:
    response = await client.post(
        f"/v1/orgs/{agent['org_id']}/agents/{agent['id']}/decommission", headers=ADMIN
    )
    assert response.status_code == 200, response.text


def identifier_url(did: str) -> str:
    return f"/v1/identifiers/{quote(did, safe='')}"


def b64url(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def sign(private_jwk: dict[str, Any], message: bytes) -> bytes:
    """Sign with a private JWK, using only its raw members (no JOSE library in between)."""
    d = b64url(private_jwk["d"])
    if private_jwk["kty"] == "OKP":
        return Ed25519PrivateKey.from_private_bytes(d).sign(message)
    private = ec.derive_private_key(int.from_bytes(d, "big"), ec.SECP256R1())
    return private.sign(message, ec.ECDSA(hashes.SHA256()))


def verify(public_jwk: dict[str, Any], signature: bytes, message: bytes) -> None:
    """Verify with a public JWK as published; raises `InvalidSignature` on a mismatch."""
    if public_jwk["kty"] == "OKP":
        assert public_jwk["crv"] == "Ed25519"
        Ed25519PublicKey.from_public_bytes(b64url(public_jwk["x"])).verify(signature, message)
        return
    assert public_jwk["crv"] == "P-256"
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(b64url(public_jwk["x"]), "big"),
        int.from_bytes(b64url(public_jwk["y"]), "big"),
        ec.SECP256R1(),
    )
    numbers.public_key().verify(signature, message, ec.ECDSA(hashes.SHA256()))


def other_private_jwk(kty: str) -> dict[str, Any]:
    key = OKPKey.generate_key("Ed25519") if kty == "OKP" else ECKey.generate_key("P-256")
    return dict(key.as_dict(private=True))


def method_kid(method_id: str) -> str:
    return method_id.split("#", 1)[1]


class TestAgentDidDocument:
    async def test_document_is_a_did_document_served_as_did_ld_json(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, visibility="public")
        response = await client.get(f"/agents/{agent['id']}/did.json")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/did+ld+json")
        document = response.json()
        assert document["id"] == agent["did"] == f"{REGISTRY_DID}:agents:{agent['id']}"
        parsed = pydid.deserialize_document(document, strict=True)
        assert str(parsed.id) == agent["did"]
        assert parsed.verification_method == []

    async def test_each_key_is_a_json_web_key_for_authentication_and_assertion(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, visibility="public")
        ed = await generate_key(client, agent, "Ed25519")
        p256 = await generate_key(client, agent, "P-256")
        document = (await client.get(f"/agents/{agent['id']}/did.json")).json()
        parsed = pydid.deserialize_document(document, strict=True)

        methods = {method_kid(str(m.id)): m for m in parsed.verification_method or []}
        assert set(methods) == {ed["kid"], p256["kid"]}
        for key in (ed, p256):
            method = methods[key["kid"]]
            assert isinstance(method, JsonWebKey2020)
            assert str(method.id) == f"{agent['did']}#{key['kid']}"
            assert str(method.controller) == agent["did"]
            assert method.public_key_jwk == key["public_jwk"]
        references = {f"{agent['did']}#{key['kid']}" for key in (ed, p256)}
        assert {str(ref) for ref in parsed.authentication or []} == references
        assert {str(ref) for ref in parsed.assertion_method or []} == references
        assert set(parsed.also_known_as or []) == {ed["did_key"], p256["did_key"]}

    async def test_signature_by_the_returned_private_key_verifies_with_the_published_key(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, visibility="public")
        generated = [
            await generate_key(client, agent, "Ed25519"),
            await generate_key(client, agent, "P-256"),
        ]
        document = (await client.get(f"/agents/{agent['id']}/did.json")).json()
        published = {
            method_kid(method["id"]): method["publicKeyJwk"]
            for method in document["verificationMethod"]
        }
        message = b"invoice 42 approved by " + agent["did"].encode()
        for key in generated:
            public_jwk = published[key["kid"]]
            assert "d" not in public_jwk
            verify(public_jwk, sign(key["private_jwk"], message), message)
            with pytest.raises(InvalidSignature):
                verify(public_jwk, sign(key["private_jwk"], message), message + b"!")
            stranger = other_private_jwk(public_jwk["kty"])
            with pytest.raises(InvalidSignature):
                verify(public_jwk, sign(stranger, message), message)

    async def test_services_point_at_the_card_and_the_endpoint(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(
            client, visibility="public", endpoint_url=ENDPOINT, capabilities=["ledger.read"]
        )
        document = (await client.get(f"/agents/{agent['id']}/did.json")).json()
        parsed = pydid.deserialize_document(document, strict=True)
        endpoints = {str(s.id): (s.type, s.service_endpoint) for s in parsed.service or []}
        assert endpoints == {
            f"{agent['did']}#agent-card": (
                "A2AAgentCard",
                f"{PUBLIC_URL}/agents/{agent['id']}/agent-card.json",
            ),
            f"{agent['did']}#endpoint": ("AgentEndpoint", agent["endpoint_url"]),
        }
        assert agent["endpoint_url"].startswith(ENDPOINT)

    async def test_agent_without_endpoint_lists_no_card_and_no_endpoint(
        self, client: httpx.AsyncClient
    ) -> None:
        """An A2A card needs an interface, so an agent without endpoint_url publishes none."""
        await create_org(client, "acme")
        agent = await create_agent(client, visibility="public", capabilities=["ledger.read"])
        document = (await client.get(f"/agents/{agent['id']}/did.json")).json()
        assert "service" not in document
        pydid.deserialize_document(document, strict=True)

    async def test_revoked_key_leaves_the_document(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, visibility="public")
        kept = await generate_key(client, agent, "Ed25519")
        revoked = await generate_key(client, agent, "P-256")
        response = await client.delete(
            f"/v1/orgs/acme/agents/{agent['id']}/keys/{revoked['kid']}", headers=ADMIN
        )
        assert response.status_code == 200, response.text
        document = (await client.get(f"/agents/{agent['id']}/did.json")).json()
        kept_ref = f"{agent['did']}#{kept['kid']}"
        assert [method["id"] for method in document["verificationMethod"]] == [kept_ref]
        assert document["authentication"] == [kept_ref]
        assert document["assertionMethod"] == [kept_ref]
        assert document["alsoKnownAs"] == [kept["did_key"]]

    async def test_private_agent_is_404_anonymously(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, visibility="private")
        response = await client.get(f"/agents/{agent['id']}/did.json")
        assert response.status_code == 404
        assert response.json()["code"] == "AGENT_NOT_FOUND"

    async def test_private_agent_is_404_for_another_org(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        intruder = await create_org_key(client, "globex")
        agent = await create_agent(client, visibility="private")
        response = await client.get(f"/agents/{agent['id']}/did.json", headers=bearer(intruder))
        assert response.status_code == 404
        assert response.json()["code"] == "AGENT_NOT_FOUND"

    async def test_private_agent_is_served_to_its_org_and_the_admin(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        own = await create_org_key(client, "acme")
        agent = await create_agent(client, visibility="private")
        for headers in (bearer(own), ADMIN):
            response = await client.get(f"/agents/{agent['id']}/did.json", headers=headers)
            assert response.status_code == 200, response.text
            assert response.json()["id"] == agent["did"]

    async def test_public_agent_is_served_anonymously(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, visibility="public")
        response = await client.get(f"/agents/{agent['id']}/did.json")
        assert response.status_code == 200

    async def test_bad_credentials_are_401_even_for_a_public_agent(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, visibility="public")
        response = await client.get(
            f"/agents/{agent['id']}/did.json", headers=bearer("tbd_org_" + "x" * 43)
        )
        assert response.status_code == 401

    async def test_decommissioned_agent_is_410(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, visibility="public")
        await decommission(client, agent)
        response = await client.get(f"/agents/{agent['id']}/did.json")
        assert response.status_code == 410
        assert response.json()["code"] == "AGENT_DECOMMISSIONED"

    async def test_unknown_agent_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/agents/no-such-agent/did.json", headers=ADMIN)
        assert response.status_code == 404
        assert response.json()["code"] == "AGENT_NOT_FOUND"


class TestRegistryDidDocument:
    async def test_document_names_the_registry_did(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/.well-known/did.json")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/did+ld+json")
        document = response.json()
        assert document["id"] == REGISTRY_DID
        parsed = pydid.deserialize_document(document, strict=True)
        assert str(parsed.id) == REGISTRY_DID

    async def test_verification_methods_are_exactly_the_jwks_keys(
        self, client: httpx.AsyncClient
    ) -> None:
        document = (await client.get("/.well-known/did.json")).json()
        jwks = (await client.get("/.well-known/jwks.json")).json()
        assert jwks["keys"]
        published = {key["kid"]: key for key in jwks["keys"]}
        methods = {method_kid(m["id"]): m for m in document["verificationMethod"]}
        assert set(methods) == set(published)
        for kid, method in methods.items():
            assert method["type"] == "JsonWebKey2020"
            assert method["controller"] == REGISTRY_DID
            public = {k: v for k, v in published[kid].items() if k not in ("kid", "alg", "use")}
            assert method["publicKeyJwk"] == public
        assert set(document["assertionMethod"]) == {m["id"] for m in methods.values()}


class TestResolveDid:
    async def test_agent_did_resolves_to_its_document(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, visibility="public", endpoint_url=ENDPOINT)
        await generate_key(client, agent, "Ed25519")
        response = await client.get(identifier_url(agent["did"]))
        assert response.status_code == 200, response.text
        result = response.json()
        document = (await client.get(f"/agents/{agent['id']}/did.json")).json()
        assert result["didDocument"] == document
        assert result["didResolutionMetadata"]["contentType"] == "application/did+ld+json"
        created = datetime.fromisoformat(result["didDocumentMetadata"]["created"])
        assert created == datetime.fromisoformat(agent["created_at"])
        assert "deactivated" not in result["didDocumentMetadata"]

    async def test_private_agent_did_resolves_for_its_org_only(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        own = bearer(await create_org_key(client, "acme"))
        intruder = bearer(await create_org_key(client, "globex"))
        agent = await create_agent(client, visibility="private")
        assert (await client.get(identifier_url(agent["did"]), headers=own)).status_code == 200
        for headers in (intruder, {}):
            response = await client.get(identifier_url(agent["did"]), headers=headers)
            assert response.status_code == 404
            assert response.json()["code"] == "DID_NOT_FOUND"

    async def test_registry_did_resolves_to_its_document(self, client: httpx.AsyncClient) -> None:
        document = (await client.get("/.well-known/did.json")).json()
        response = await client.get(identifier_url(REGISTRY_DID))
        assert response.status_code == 200, response.text
        assert response.json()["didDocument"] == document

    async def test_registry_did_resolves_with_signing_keys_on_a_fresh_registry(
        self, client: httpx.AsyncClient
    ) -> None:
        # Resolution may be the very first request: it must publish the keys all the same.
        response = await client.get(identifier_url(REGISTRY_DID))
        assert response.status_code == 200, response.text
        resolved = response.json()["didDocument"]
        assert resolved["verificationMethod"]
        assert resolved == (await client.get("/.well-known/did.json")).json()

    async def test_decommissioned_agent_did_is_410_and_deactivated(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, visibility="public")
        await decommission(client, agent)
        response = await client.get(identifier_url(agent["did"]))
        assert response.status_code == 410
        body = response.json()
        assert body["code"] == "AGENT_DECOMMISSIONED"
        assert body["didDocumentMetadata"]["deactivated"] is True

    async def test_unknown_agent_did_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get(identifier_url(f"{REGISTRY_DID}:agents:no-such-agent"))
        assert response.status_code == 404
        assert response.json()["code"] == "DID_NOT_FOUND"

    async def test_did_of_another_host_or_method_is_400(self, client: httpx.AsyncClient) -> None:
        for did in (
            "did:web:evil.example:agents:x",
            "did:example:123",
            f"{REGISTRY_DID}:agents:x:extra",
        ):
            response = await client.get(identifier_url(did))
            assert response.status_code == 400, (did, response.text)
            assert response.json()["code"] == "INVALID_DID"

    async def test_registered_did_key_names_its_agent(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, visibility="public")
        key = await generate_key(client, agent, "P-256")
        response = await client.get(identifier_url(key["did_key"]))
        assert response.status_code == 200, response.text
        result = response.json()
        document = result["didDocument"]
        assert document["id"] == key["did_key"]
        assert [method["type"] for method in document["verificationMethod"]] == ["Multikey"]
        assert document["verificationMethod"][0]["publicKeyMultibase"] == key["did_key"][8:]
        assert result["didDocumentMetadata"]["equivalentId"] == [agent["did"]]

    async def test_did_key_of_a_private_agent_names_it_only_to_its_org(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        own = bearer(await create_org_key(client, "acme"))
        agent = await create_agent(client, visibility="private")
        key = await generate_key(client, agent, "Ed25519")
        mine = (await client.get(identifier_url(key["did_key"]), headers=own)).json()
        assert mine["didDocumentMetadata"]["equivalentId"] == [agent["did"]]
        anonymous = await client.get(identifier_url(key["did_key"]))
        assert anonymous.status_code == 200
        assert "equivalentId" not in anonymous.json()["didDocumentMetadata"]

    async def test_revoked_did_key_no_longer_names_its_agent(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, visibility="public")
        key = await generate_key(client, agent, "Ed25519")
        await client.delete(f"/v1/orgs/acme/agents/{agent['id']}/keys/{key['kid']}", headers=ADMIN)
        response = await client.get(identifier_url(key["did_key"]))
        assert response.status_code == 200
        assert "equivalentId" not in response.json()["didDocumentMetadata"]

    async def test_unregistered_did_key_resolves_without_an_agent(
        self, client: httpx.AsyncClient
    ) -> None:
        raw = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
        did_key = "did:key:z" + base58.b58encode(b"\xed\x01" + raw).decode()
        response = await client.get(identifier_url(did_key))
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["didDocument"]["id"] == did_key
        assert result["didDocument"]["verificationMethod"][0]["type"] == "Multikey"
        assert "equivalentId" not in result["didDocumentMetadata"]

    async def test_malformed_did_key_is_400(self, client: httpx.AsyncClient) -> None:
        truncated = "did:key:z" + base58.b58encode(b"\xed\x01" + b"\x01" * 31).decode()
        for did_key in ("did:key:not-multibase", "did:key:z0OIl", truncated):
            response = await client.get(identifier_url(did_key))
            assert response.status_code == 400, (did_key, response.text)
            assert response.json()["code"] == "INVALID_DID"


class TestCreateAgentDid:
    async def test_taken_did_is_a_conflict_and_leaves_nothing_behind(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        ctx = Context(actor=Actor(ActorKind.PLATFORM_ADMIN, "admin"), clock=runtime.clock)
        fixed = "did:web:collide.example:agents:fixed"
        async with runtime.database.unit_of_work() as session:
            await service.create_agent(
                session,
                ctx,
                runtime.settings,
                "acme",
                AgentCreate(name="first"),
                did_for=lambda _agent_id: fixed,
            )
        with pytest.raises(DidConflict) as raised:
            async with runtime.database.unit_of_work() as session:
                await service.create_agent(
                    session,
                    ctx,
                    runtime.settings,
                    "acme",
                    AgentCreate(name="second"),
                    did_for=lambda _agent_id: fixed,
                )
        assert raised.value.code == "DID_CONFLICT"
        assert raised.value.status == 409

        agents = (await client.get("/v1/orgs/acme/agents", headers=ADMIN)).json()["items"]
        assert [(agent["name"], agent["did"]) for agent in agents] == [("first", fixed)]
        events = (
            await client.get(
                "/v1/audit", params={"org": "acme", "action": "agent.created"}, headers=ADMIN
            )
        ).json()["items"]
        assert [event["details"]["agent_name"] for event in events] == ["first"]
        async with runtime.database.read_only() as session:
            rows = (
                (
                    await session.execute(
                        select(OutboxEvent).where(OutboxEvent.type == "agent.created")
                    )
                )
                .scalars()
                .all()
            )
        assert [row.data["agent_name"] for row in rows] == ["first"]
