"""No tenant sees or changes another tenant's data: every route with an id answers 404 across orgs.

The test walks the app's router, so a new route with an `{org_id}` or another id is covered
without anyone remembering to add it here.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import httpx
from fastapi import FastAPI

from tests.conftest import ADMIN, bearer, create_org, create_org_key
from tests.pki.support import csr_pem, ec_key, generate_ca, issue_certificate

_AGENT = "/v1/orgs/{org_id}/agents/{agent_id}"
_WEBHOOK = "/v1/orgs/{org_id}/webhooks/{subscription_id}"
_BODIES = {
    "POST /v1/orgs/{org_id}/keys": {"name": "stolen"},
    "PATCH /v1/orgs/{org_id}": {"display_name": "Owned"},
    "POST /v1/orgs/{org_id}/agents": {"name": "stolen"},
    f"PATCH {_AGENT}": {"display_name": "Owned"},
    f"POST {_AGENT}/keys": {"generate": "Ed25519"},
    f"POST {_AGENT}/credentials": {},
    f"PATCH {_AGENT}/credentials/{{credential_id}}": {"name": "owned"},
    f"POST {_AGENT}/credentials/{{credential_id}}/rotate": {},
    "PATCH /v1/orgs/{org_id}/token-settings": {"require_dpop": True},
    "POST /v1/orgs/{org_id}/token-revocations": {"kind": "agent", "value": "x"},
    "POST /v1/orgs/{org_id}/cas": {"source": "generate"},
    "POST /v1/orgs/{org_id}/cas/{ca_id}/replace": {"source": "generate"},
    "PATCH /v1/orgs/{org_id}/pki-settings": {"certificate_lifetime_seconds": 3600},
    f"POST {_AGENT}/certificates": {"csr_pem": csr_pem(ec_key())},
    f"PUT {_AGENT}/certificate-pin": {"certificate_id": "x"},
    "POST /v1/orgs/{org_id}/certificate-revocations": {"ca_id": "x", "serial": "01"},
    "POST /v1/orgs/{org_id}/bindings": {"agent_id": "x", "scope": ["ledger.read"]},
    "PATCH /v1/orgs/{org_id}/bindings/{binding_id}": {"note": "owned"},
    "PATCH /v1/orgs/{org_id}/trust-settings": {"binding_required": True},
    "POST /v1/orgs/{org_id}/registration-tokens": {"label": "stolen"},
    f"POST {_AGENT}/commands": {"action": "rotate"},
    "POST /v1/agent/commands/{command_id}/running": {"instance_id": "i-1"},
    "POST /v1/agent/commands/{command_id}/result": {"instance_id": "i-1", "status": "SUCCEEDED"},
    "POST /v1/orgs/{org_id}/webhooks": {"url": "http://127.0.0.1:9/stolen", "event_types": ["*"]},
    f"PATCH {_WEBHOOK}": {"active": False},
    f"POST {_WEBHOOK}/rotate-secret": {"grace_period_seconds": 0},
}
# Routes only the platform admin may call answer 403 to any org key, before looking at the id.
_ADMIN_ONLY = {
    "PATCH /v1/orgs/{org_id}",
    "DELETE /v1/orgs/{org_id}",
    "POST /v1/orgs/{org_id}/suspend",
    "POST /v1/orgs/{org_id}/reactivate",
    "POST /v1/orgs/{org_id}/approve",
    "POST /v1/orgs/{org_id}/reject",
    "GET /v1/invites/{invite_id}",
    "DELETE /v1/invites/{invite_id}",
}
# The agent's own side takes only an agent's access token: an org key is refused before any id.
_AGENT_ONLY = {
    "POST /v1/agent/commands/{command_id}/running",
    "POST /v1/agent/commands/{command_id}/result",
}
# Trust bundles and CRLs are published to every relying party, like a CA's own CRL endpoint;
# they hold CA certificates and revoked serials, never tenant data.
_PUBLIC_DOCUMENTS = {"GET /pki/orgs/{org_id}/bundle.pem", "GET /pki/cas/{ca_id}/crl"}


def _routes_with_ids(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path template) with a path parameter, from the app's own route table."""
    paths = app.openapi()["paths"]
    return [
        (method.upper(), path)
        for path, operations in paths.items()
        if "{" in path
        for method in operations
    ]


class TestCrossTenantAccess:
    async def test_every_route_with_an_id_hides_other_orgs(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        globex_key_secret = await create_org_key(client, "globex")
        globex_key_id = (await client.get("/v1/orgs/globex/keys", headers=ADMIN)).json()[0]["id"]
        globex_event = (await client.get("/v1/audit?org=globex", headers=ADMIN)).json()["items"][0]
        agent, kid, credential_id = await _globex_agent(client)
        pki_ids = await _globex_pki(client, str(agent["id"]))
        ids = {
            **pki_ids,
            "org_id": "globex",
            "key_id": globex_key_id,
            "event_id": globex_event["id"],
            "agent_id": agent["id"],
            "kid": kid,
            "credential_id": credential_id,
            "did": quote(agent["did"], safe=""),
        }
        acme_key = await create_org_key(client, "acme")

        app: FastAPI = client._transport.app  # type: ignore[attr-defined]
        routes = _routes_with_ids(app)
        assert len(routes) >= 25
        for method, template in routes:
            path = re.sub(r"\{(\w+)\}", lambda match: ids[match.group(1)], template)
            signature = f"{method} {template}"
            response = await client.request(
                method, path, json=_BODIES.get(signature), headers=bearer(acme_key)
            )
            expected = 403 if signature in _ADMIN_ONLY | _AGENT_ONLY else 404
            if signature in _PUBLIC_DOCUMENTS:
                expected = 200
            assert response.status_code == expected, (signature, response.text)
            if signature not in _PUBLIC_DOCUMENTS:  # a CA's name is in its CRL, by design
                assert "Globex" not in response.text  # never the other tenant's data

        # globex is untouched: its key still works and its org is unchanged.
        assert (await client.get("/v1/me", headers=bearer(globex_key_secret))).status_code == 200
        assert (await client.get("/v1/orgs/globex", headers=ADMIN)).json()[
            "display_name"
        ] == "Globex"
        after = (await client.get(f"/v1/orgs/globex/agents/{agent['id']}", headers=ADMIN)).json()
        assert after == agent
        credentials = f"/v1/orgs/globex/agents/{agent['id']}/credentials"
        listed = (await client.get(credentials, headers=ADMIN)).json()
        assert [(c["id"], c["status"], c["name"]) for c in listed if c["id"] == credential_id] == [
            (credential_id, "active", "default")
        ]
        assert all(c["status"] == "active" for c in listed)
        certificates = f"/v1/orgs/globex/agents/{agent['id']}/certificates"
        listed = (await client.get(certificates, headers=ADMIN)).json()
        assert [(c["id"], c["status"]) for c in listed] == [(ids["certificate_id"], "active")]
        cas = (await client.get("/v1/orgs/globex/cas", headers=ADMIN)).json()
        assert [(ca["id"], ca["status"]) for ca in cas] == [(ids["ca_id"], "active")]
        binding = f"/v1/orgs/globex/bindings/{ids['binding_id']}"
        assert (await client.get(binding, headers=ADMIN)).json()["status"] == "pending"
        webhook = f"/v1/orgs/globex/webhooks/{ids['subscription_id']}"
        subscription = (await client.get(webhook, headers=ADMIN)).json()
        assert (subscription["active"], subscription["url"]) == (True, "http://127.0.0.1:9/hook")
        assert [
            s["id"] for s in (await client.get("/v1/orgs/acme/webhooks", headers=ADMIN)).json()
        ] == []

    async def test_acme_key_cannot_create_agents_in_globex(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        acme_key = await create_org_key(client, "acme")
        response = await client.post(
            "/v1/orgs/globex/agents", json={"name": "stolen"}, headers=bearer(acme_key)
        )
        assert response.status_code == 404
        assert (await client.get("/v1/orgs/globex/agents", headers=ADMIN)).json()["items"] == []

    async def test_audit_filter_on_another_org_is_404(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        acme_key = await create_org_key(client, "acme")
        response = await client.get("/v1/audit", params={"org": "globex"}, headers=bearer(acme_key))
        assert response.status_code == 404

    async def test_org_key_sees_only_its_own_audit_events(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        acme_key = await create_org_key(client, "acme")
        events = (await client.get("/v1/audit", headers=bearer(acme_key))).json()["items"]
        assert events
        assert {event["org_id"] for event in events} == {"acme"}


async def _globex_agent(client: httpx.AsyncClient) -> tuple[dict[str, object], str, str]:
    """A private globex agent with a key and a credential: every id an attacker might try."""
    response = await client.post(
        "/v1/orgs/globex/agents",
        json={"name": "ledger", "display_name": "Globex Ledger", "capabilities": ["ledger.read"]},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    agent: dict[str, object] = response.json()
    base = f"/v1/orgs/globex/agents/{agent['id']}"
    key = await client.post(f"{base}/keys", json={"generate": "P-256"}, headers=ADMIN)
    credential = await client.post(f"{base}/credentials", json={}, headers=ADMIN)
    assert key.status_code == credential.status_code == 201
    return agent, key.json()["kid"], credential.json()["id"]


async def _globex_pki(client: httpx.AsyncClient, agent_id: str) -> dict[str, str]:
    """A CA, a certificate, a binding of globex's agent, and an attach invite for globex."""
    ca = await generate_ca(client, "globex")
    certificate, _, _ = await issue_certificate(client, "globex", agent_id)
    binding = await client.post(
        "/v1/orgs/globex/bindings",
        json={"agent_id": agent_id, "scope": ["ledger.read"]},
        headers=ADMIN,
    )
    invite = await client.post(
        "/v1/invites", json={"kind": "attach", "org_id": "globex"}, headers=ADMIN
    )
    assert binding.status_code == invite.status_code == 201
    token = await client.post(
        "/v1/orgs/globex/registration-tokens", json={"label": "fleet"}, headers=ADMIN
    )
    assert token.status_code == 201
    return {
        "ca_id": ca["id"],
        "certificate_id": certificate["id"],
        "binding_id": binding.json()["id"],
        "invite_id": invite.json()["id"],
        "token_id": token.json()["id"],
        "command_id": await _globex_command(client, agent_id),
        **await _globex_webhook(client),
    }


async def _globex_command(client: httpx.AsyncClient, agent_id: str) -> str:
    """A pending command for globex's agent (its action declared with the agent's own token)."""
    base = f"/v1/orgs/globex/agents/{agent_id}"
    credential = await client.post(f"{base}/credentials", json={}, headers=ADMIN)
    body = credential.json()
    token = await client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(body["client_id"], body["client_secret"]),
    )
    assert token.status_code == 200, token.text
    declared = await client.put(
        "/v1/agent/actions",
        json={"actions": [{"name": "rotate"}]},
        headers=bearer(token.json()["access_token"]),
    )
    assert declared.status_code == 200, declared.text
    command = await client.post(f"{base}/commands", json={"action": "rotate"}, headers=ADMIN)
    assert command.status_code == 201, command.text
    command_id: str = command.json()[0]["id"]
    return command_id


async def _globex_webhook(client: httpx.AsyncClient) -> dict[str, str]:
    """A globex webhook subscription and the test delivery sent to it."""
    subscription = await client.post(
        "/v1/orgs/globex/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["*"]},
        headers=ADMIN,
    )
    assert subscription.status_code == 201, subscription.text
    subscription_id: str = subscription.json()["id"]
    delivery = await client.post(f"/v1/orgs/globex/webhooks/{subscription_id}/test", headers=ADMIN)
    assert delivery.status_code == 202, delivery.text
    return {"subscription_id": subscription_id, "delivery_id": delivery.json()["id"]}
