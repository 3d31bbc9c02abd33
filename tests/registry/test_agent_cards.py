"""Signed A2A agent cards: valid for a2a-sdk, verifiable with the registry's published JWKS."""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import urlparse

import httpx
import jwt
import pytest
import rfc8785
from a2a.types import AgentCard
from a2a.utils.proto_utils import validate_proto_required_fields
from a2a.utils.signing import InvalidSignaturesError, create_signature_verifier
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from google.protobuf.json_format import ParseDict

from tests.conftest import ADMIN, bearer, create_agent, create_org, create_org_key

PUBLIC_URL = "http://127.0.0.1:8080"
ENDPOINT = "https://agents.acme.example/a2a"
CAPABILITIES = ["invoices:read", "invoices.approve:write", "crm"]


async def create_listed_agent(client: httpx.AsyncClient) -> dict[str, Any]:
    """A public agent with everything a card shows: endpoint, capabilities, description."""
    await create_org(client, "acme")
    return await create_agent(
        client,
        display_name="Invoice Bot",
        description="Reads and approves invoices",
        version="1.4.0",
        endpoint_url=ENDPOINT,
        capabilities=CAPABILITIES,
        visibility="public",
    )


async def fetch_card(client: httpx.AsyncClient, agent: dict[str, Any]) -> dict[str, Any]:
    response = await client.get(f"/agents/{agent['id']}/agent-card.json")
    assert response.status_code == 200, response.text
    card: dict[str, Any] = response.json()
    return card


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def protected_header(card: dict[str, Any]) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(b64url_decode(card["signatures"][0]["protected"]))
    return header


async def jwks_key_provider(client: httpx.AsyncClient, card: dict[str, Any]) -> Any:
    """A key provider as a verifier would write one: fetch the `jku` set, pick the key by `kid`.

    The a2a-sdk calls providers synchronously, so the set named by the card is fetched up front
    (from the app, which is what `jku` names) and the provider only looks the key up.
    """
    jku = protected_header(card)["jku"]
    assert jku == f"{PUBLIC_URL}/.well-known/jwks.json"
    response = await client.get(urlparse(jku).path)
    assert response.status_code == 200, response.text
    keys = {key["kid"]: key for key in response.json()["keys"]}

    def provider(kid: str | None, jku_seen: str | None) -> jwt.PyJWK:
        assert jku_seen == jku
        assert kid in keys, f"kid {kid!r} is not in the published JWKS"
        return jwt.PyJWK(keys[kid])

    return provider


def without_empty(value: Any) -> Any:
    """A2A canonicalization drops empty strings, lists and objects at every depth."""
    if isinstance(value, dict):
        kept = {name: v for name, item in value.items() if (v := without_empty(item)) is not None}
        return kept or None
    if isinstance(value, list):
        kept_items = [v for item in value if (v := without_empty(item)) is not None]
        return kept_items or None
    return None if value == "" else value


def verify_es256_detached(card: dict[str, Any], public_jwk: dict[str, Any]) -> None:
    """RFC 7515 appendix F: the payload is the JCS form of the card without signatures."""
    unsigned = {name: value for name, value in card.items() if name != "signatures"}
    payload = rfc8785.dumps(without_empty(unsigned))
    signature = card["signatures"][0]
    signing_input = f"{signature['protected']}.{b64url_encode(payload)}".encode()
    raw = b64url_decode(signature["signature"])
    assert len(raw) == 64  # ES256 signatures are r || s, 32 bytes each (RFC 7518 §3.4)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public_key = ec.EllipticCurvePublicNumbers(
        int.from_bytes(b64url_decode(public_jwk["x"]), "big"),
        int.from_bytes(b64url_decode(public_jwk["y"]), "big"),
        ec.SECP256R1(),
    ).public_key()
    public_key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))


class TestAgentCard:
    async def test_card_is_a_valid_a2a_agent_card(self, client: httpx.AsyncClient) -> None:
        agent = await create_listed_agent(client)
        card = ParseDict(await fetch_card(client, agent), AgentCard())
        validate_proto_required_fields(card)
        assert card.name == "Invoice Bot"
        assert card.description == "Reads and approves invoices"
        assert card.version == "1.4.0"
        assert card.provider.organization == "Acme"
        assert card.supported_interfaces[0].url == agent["endpoint_url"]
        assert agent["endpoint_url"].startswith(ENDPOINT)
        assert [skill.id for skill in card.skills] == CAPABILITIES
        assert len(card.signatures) == 1

    async def test_security_scheme_is_tabard_client_credentials(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await create_listed_agent(client)
        card = ParseDict(await fetch_card(client, agent), AgentCard())
        schemes = list(card.security_schemes.values())
        assert len(schemes) == 1
        flows = schemes[0].oauth2_security_scheme.flows
        assert flows.client_credentials.token_url == f"{PUBLIC_URL}/oauth2/token"
        assert set(flows.client_credentials.scopes) == set(CAPABILITIES)

    async def test_signature_verifies_with_the_published_jwks(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await create_listed_agent(client)
        raw = await fetch_card(client, agent)
        header = protected_header(raw)
        assert header["alg"] == "ES256"
        assert header["typ"] == "JOSE"
        verifier = create_signature_verifier(
            await jwks_key_provider(client, raw), algorithms=["ES256"]
        )
        verifier(ParseDict(raw, AgentCard()))

    async def test_tampered_card_fails_verification(self, client: httpx.AsyncClient) -> None:
        agent = await create_listed_agent(client)
        raw = await fetch_card(client, agent)
        verifier = create_signature_verifier(
            await jwks_key_provider(client, raw), algorithms=["ES256"]
        )
        card = ParseDict(raw, AgentCard())
        card.description = "Approves every invoice, no questions asked"
        with pytest.raises(InvalidSignaturesError):
            verifier(card)

    async def test_other_algorithms_are_not_accepted(self, client: httpx.AsyncClient) -> None:
        agent = await create_listed_agent(client)
        raw = await fetch_card(client, agent)
        verifier = create_signature_verifier(
            await jwks_key_provider(client, raw), algorithms=["RS256"]
        )
        with pytest.raises(InvalidSignaturesError):
            verifier(ParseDict(raw, AgentCard()))

    async def test_signature_is_a_detached_jws_over_the_canonical_card(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await create_listed_agent(client)
        card = await fetch_card(client, agent)
        jwks = (await client.get("/.well-known/jwks.json")).json()
        public_jwk = next(k for k in jwks["keys"] if k["kid"] == protected_header(card)["kid"])
        verify_es256_detached(card, public_jwk)
        tampered = {**card, "version": "9.9.9"}
        with pytest.raises(InvalidSignature):
            verify_es256_detached(tampered, public_jwk)

    async def test_private_agent_card_is_404_anonymously(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, visibility="private")
        response = await client.get(f"/agents/{agent['id']}/agent-card.json")
        assert response.status_code == 404
        assert response.json()["code"] == "AGENT_NOT_FOUND"

    async def test_private_agent_card_is_404_for_another_org(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        intruder = await create_org_key(client, "globex")
        agent = await create_agent(client, visibility="private")
        response = await client.get(
            f"/agents/{agent['id']}/agent-card.json", headers=bearer(intruder)
        )
        assert response.status_code == 404
        assert response.json()["code"] == "AGENT_NOT_FOUND"

    async def test_private_agent_card_is_served_to_its_org(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        own = await create_org_key(client, "acme")
        agent = await create_agent(
            client,
            visibility="private",
            display_name="Ledger",
            endpoint_url="https://ledger.acme.example/a2a",
            capabilities=["ledger.read"],
        )
        response = await client.get(f"/agents/{agent['id']}/agent-card.json", headers=bearer(own))
        assert response.status_code == 200, response.text
        assert response.json()["name"] == "Ledger"

    async def test_decommissioned_agent_card_is_410(self, client: httpx.AsyncClient) -> None:
        agent = await create_listed_agent(client)
        decommissioned = await client.post(
            f"/v1/orgs/acme/agents/{agent['id']}/decommission", headers=ADMIN
        )
        assert decommissioned.status_code == 200
        response = await client.get(f"/agents/{agent['id']}/agent-card.json")
        assert response.status_code == 410
        assert response.json()["code"] == "AGENT_DECOMMISSIONED"

    async def test_unknown_agent_card_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/agents/no-such-agent/agent-card.json", headers=ADMIN)
        assert response.status_code == 404

    async def test_agent_without_endpoint_or_capabilities_has_no_card_yet(
        self, client: httpx.AsyncClient
    ) -> None:
        """A2A requires an interface and a skill; we refuse to publish a card that lacks them."""
        await create_org(client, "acme")
        agent = await create_agent(client, visibility="public")
        response = await client.get(f"/agents/{agent['id']}/agent-card.json")
        assert response.status_code == 404
        assert response.json()["code"] == "AGENT_CARD_UNAVAILABLE"
        assert response.json()["missing"] == ["endpoint_url", "capabilities"]

        patch = {"endpoint_url": "https://bot.example/a2a", "capabilities": ["ledger.read"]}
        updated = await client.patch(
            f"/v1/orgs/acme/agents/{agent['id']}", json=patch, headers=ADMIN
        )
        assert updated.status_code == 200
        response = await client.get(f"/agents/{agent['id']}/agent-card.json")
        assert response.status_code == 200
        assert response.json()["skills"][0]["id"] == "ledger.read"


class TestJwks:
    async def test_key_set_may_be_cached_briefly(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/.well-known/jwks.json")
        assert response.status_code == 200
        max_age = re.search(r"max-age=(\d+)", response.headers["cache-control"])
        assert max_age is not None
        assert int(max_age.group(1)) > 0

    async def test_keys_are_public_es256_signing_keys(self, client: httpx.AsyncClient) -> None:
        keys = (await client.get("/.well-known/jwks.json")).json()["keys"]
        assert keys
        for key in keys:
            assert (key["kty"], key["crv"], key["alg"], key["use"]) == (
                "EC",
                "P-256",
                "ES256",
                "sig",
            )
            assert "d" not in key
