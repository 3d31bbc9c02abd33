"""Who may ask for an agent's certificate (the org, or the agent for itself), and the one
certificate an agent logs in with: pinned on issuance, set, read and cleared by the org, and
shown in the agent's certificate listing."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ADMIN, bearer, create_agent, create_org, create_org_key
from tests.pki.support import csr_pem, ec_key, generate_ca, issue_certificate, spiffe_id
from tests.tokens.support import access_token, agent_client

ACME = "/v1/orgs/acme/agents"


def pin_url(agent: dict[str, Any]) -> str:
    return f"{ACME}/{agent['id']}/certificate-pin"


async def pinned_flags(client: httpx.AsyncClient, agent: dict[str, Any]) -> dict[str, bool]:
    """Certificate id → `pinned`, as the agent's listing shows it."""
    listed = await client.get(f"{ACME}/{agent['id']}/certificates", headers=ADMIN)
    assert listed.status_code == 200, listed.text
    return {certificate["id"]: certificate["pinned"] for certificate in listed.json()}


async def acme_agent_with_ca(client: httpx.AsyncClient, name: str = "bot") -> dict[str, Any]:
    await create_org(client, "acme")
    await generate_ca(client, "acme")
    return await create_agent(client, "acme", name)


async def revoke(client: httpx.AsyncClient, certificate: dict[str, Any]) -> None:
    response = await client.post(
        "/v1/orgs/acme/certificate-revocations",
        json={"certificate_id": certificate["id"], "reason": "keyCompromise"},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text


async def submit(
    client: httpx.AsyncClient, agent_id: str, headers: dict[str, str], **body: Any
) -> httpx.Response:
    return await client.post(f"{ACME}/{agent_id}/certificates", json=body, headers=headers)


class TestAgentRequestsItsOwnCertificate:
    async def test_an_agent_signs_its_own_csr_with_its_access_token(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        await generate_ca(client, "acme")
        bot = await agent_client(client, "acme", "bot", create_org_too=False)
        token = bearer(await access_token(client, bot))
        response = await submit(client, bot.agent["id"], token, csr_pem=csr_pem(ec_key()))
        assert response.status_code == 201, response.text
        assert response.json()["spiffe_id"] == spiffe_id("acme", "bot")
        listed = await client.get(
            f"/v1/orgs/acme/agents/{bot.agent['id']}/certificates", headers=token
        )
        assert [c["id"] for c in listed.json()] == [response.json()["id"]]

    async def test_not_for_another_agent(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await generate_ca(client, "acme")
        bot = await agent_client(client, "acme", "bot", create_org_too=False)
        other = await create_agent(client, "acme", "other-bot")
        token = bearer(await access_token(client, bot))
        response = await submit(client, other["id"], token, csr_pem=csr_pem(ec_key()))
        assert response.status_code == 404, response.text
        listed = await client.get(f"/v1/orgs/acme/agents/{other['id']}/certificates", headers=ADMIN)
        assert listed.json() == []

    async def test_an_agent_may_not_pin_its_certificate(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await generate_ca(client, "acme")
        bot = await agent_client(client, "acme", "bot", create_org_too=False)
        token = bearer(await access_token(client, bot))
        response = await submit(
            client, bot.agent["id"], headers=token, csr_pem=csr_pem(ec_key()), pin=True
        )
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "NOT_PERMITTED"
        pin = await client.get(
            f"/v1/orgs/acme/agents/{bot.agent['id']}/certificate-pin", headers=ADMIN
        )
        assert pin.status_code == 404, pin.text


class TestPinOnIssuance:
    async def test_pin_true_makes_the_new_certificate_the_login_certificate(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await acme_agent_with_ca(client)
        body, _, _ = await issue_certificate(client, "acme", agent["id"], pin=True)
        assert body["pinned"] is True
        pin = await client.get(pin_url(agent), headers=ADMIN)
        assert pin.status_code == 200, pin.text
        assert pin.json()["certificate_id"] == body["id"]
        assert pin.json()["thumbprint"] == body["thumbprint"]
        assert pin.json()["pinned_by"] == "api"

    async def test_without_pin_nothing_is_pinned(self, client: httpx.AsyncClient) -> None:
        agent = await acme_agent_with_ca(client)
        body, _, _ = await issue_certificate(client, "acme", agent["id"])
        assert body["pinned"] is False
        assert (await client.get(pin_url(agent), headers=ADMIN)).status_code == 404


class TestGetPin:
    async def test_an_agent_without_a_pin(self, client: httpx.AsyncClient) -> None:
        agent = await acme_agent_with_ca(client)
        response = await client.get(pin_url(agent), headers=ADMIN)
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "CERTIFICATE_PIN_NOT_FOUND"

    async def test_another_org_gets_404(self, client: httpx.AsyncClient) -> None:
        agent = await acme_agent_with_ca(client)
        await issue_certificate(client, "acme", agent["id"], pin=True)
        await create_org(client, "globex")
        intruder = bearer(await create_org_key(client, "globex"))
        response = await client.get(pin_url(agent), headers=intruder)
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "ORG_NOT_FOUND"


class TestSetPin:
    async def test_the_org_rotates_the_pin_to_another_certificate(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await acme_agent_with_ca(client)
        first, _, _ = await issue_certificate(client, "acme", agent["id"], pin=True)
        second, _, _ = await issue_certificate(client, "acme", agent["id"])
        response = await client.put(
            pin_url(agent), json={"certificate_id": second["id"]}, headers=ADMIN
        )
        assert response.status_code == 200, response.text
        assert response.json()["certificate_id"] == second["id"]
        assert response.json()["agent_id"] == agent["id"]
        assert (await client.get(pin_url(agent), headers=ADMIN)).json() == response.json()
        assert await pinned_flags(client, agent) == {first["id"]: False, second["id"]: True}

    async def test_a_revoked_certificate_cannot_be_pinned(self, client: httpx.AsyncClient) -> None:
        agent = await acme_agent_with_ca(client)
        certificate, _, _ = await issue_certificate(client, "acme", agent["id"])
        await revoke(client, certificate)
        response = await client.put(
            pin_url(agent), json={"certificate_id": certificate["id"]}, headers=ADMIN
        )
        assert response.status_code == 400, response.text
        assert response.json()["reason"] == "certificate_revoked"
        assert (await client.get(pin_url(agent), headers=ADMIN)).status_code == 404

    async def test_another_agents_certificate_cannot_be_pinned(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await acme_agent_with_ca(client)
        other = await create_agent(client, "acme", "other-bot")
        foreign, _, _ = await issue_certificate(client, "acme", other["id"])
        response = await client.put(
            pin_url(agent), json={"certificate_id": foreign["id"]}, headers=ADMIN
        )
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "CERTIFICATE_NOT_FOUND"

    async def test_an_agent_token_cannot_set_a_pin(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await generate_ca(client, "acme")
        bot = await agent_client(client, "acme", "bot", create_org_too=False)
        certificate, _, _ = await issue_certificate(client, "acme", bot.agent["id"])
        token = bearer(await access_token(client, bot))
        response = await client.put(
            pin_url(bot.agent), json={"certificate_id": certificate["id"]}, headers=token
        )
        assert response.status_code == 403, response.text
        assert (await client.get(pin_url(bot.agent), headers=ADMIN)).status_code == 404


class TestClearPin:
    async def test_clearing_forgets_the_pin(self, client: httpx.AsyncClient) -> None:
        agent = await acme_agent_with_ca(client)
        certificate, _, _ = await issue_certificate(client, "acme", agent["id"], pin=True)
        response = await client.delete(pin_url(agent), headers=ADMIN)
        assert response.status_code == 204, response.text
        again = await client.get(pin_url(agent), headers=ADMIN)
        assert again.status_code == 404, again.text
        assert again.json()["code"] == "CERTIFICATE_PIN_NOT_FOUND"
        assert await pinned_flags(client, agent) == {certificate["id"]: False}

    async def test_clearing_without_a_pin_is_not_found(self, client: httpx.AsyncClient) -> None:
        agent = await acme_agent_with_ca(client)
        response = await client.delete(pin_url(agent), headers=ADMIN)
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "CERTIFICATE_PIN_NOT_FOUND"


class TestListingShowsThePin:
    async def test_only_the_pinned_certificate_is_marked(self, client: httpx.AsyncClient) -> None:
        agent = await acme_agent_with_ca(client)
        plain, _, _ = await issue_certificate(client, "acme", agent["id"])
        pinned, _, _ = await issue_certificate(client, "acme", agent["id"], pin=True)
        assert await pinned_flags(client, agent) == {plain["id"]: False, pinned["id"]: True}
        url = f"{ACME}/{agent['id']}/certificates/{pinned['id']}"
        one = await client.get(url, headers=ADMIN)
        assert one.status_code == 200, one.text
        assert one.json()["pinned"] is True
        assert one.json()["chain_pem"] != ""
