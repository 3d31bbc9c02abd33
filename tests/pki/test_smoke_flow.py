"""Temporary smoke test of the main certificate flow (to be replaced by the full suites)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tabard.core.clock import FrozenClock
from tests.conftest import ADMIN, bearer, create_agent, create_org
from tests.pki.support import MTLS, generate_ca, issue_certificate, proxy_header, spiffe_id


@pytest.fixture
def settings(settings: Any) -> Any:
    return settings.model_copy(update=MTLS)


async def test_flow(client: httpx.AsyncClient, clock: FrozenClock) -> None:
    await create_org(client, "acme")
    ca = await generate_ca(client, "acme")
    agent = await create_agent(client, "acme", "bot", capabilities=["a.read", "a.write"])
    body, cert, _key = await issue_certificate(client, "acme", agent["id"])
    assert body["spiffe_id"] == spiffe_id("acme", "bot")
    response = await client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": spiffe_id("acme", "bot")},
        headers=proxy_header(cert),
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    me = await client.get("/v1/me", headers={**bearer(token), **proxy_header(cert)})
    assert me.status_code == 200, me.text
    revoked = await client.post(
        "/v1/orgs/acme/certificate-revocations",
        json={"ca_id": ca["id"], "serial": body["serial"], "reason": "keyCompromise"},
        headers=ADMIN,
    )
    assert revoked.status_code == 201, revoked.text
    me = await client.get("/v1/me", headers={**bearer(token), **proxy_header(cert)})
    assert me.status_code == 401, me.text
    response = await client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": spiffe_id("acme", "bot")},
        headers=proxy_header(cert),
    )
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "CERTIFICATE_REVOKED", response.text
    crl = await client.get(f"/pki/cas/{ca['id']}/crl")
    assert crl.status_code == 200, crl.text
    bundle = await client.get("/pki/bundle")
    assert bundle.status_code == 200, bundle.text
    assert len(bundle.json()["keys"]) == 1


async def test_onboarding_and_binding(client: httpx.AsyncClient) -> None:
    invite = await client.post(
        "/v1/invites", json={"kind": "join", "label": "globex"}, headers=ADMIN
    )
    assert invite.status_code == 201, invite.text
    secret = invite.json()["invite"]
    inspect = await client.post("/v1/onboarding/inspect", json={"invite": secret})
    assert inspect.status_code == 200, inspect.text
    joined = await client.post(
        "/v1/onboarding/join",
        json={
            "invite": secret,
            "org": {
                "id": "globex",
                "display_name": "Globex",
                "contact": {"name": "Hank", "email": "hank@globex.example"},
            },
            "ca": {"source": "generate"},
        },
    )
    assert joined.status_code == 201, joined.text
    key = joined.json()["api_key"]["secret"]
    pending = await client.get("/v1/orgs/globex", headers=bearer(key))
    assert pending.status_code == 403 and pending.json()["code"] == "ORG_NOT_ACTIVE", pending.text
    again = await client.post("/v1/onboarding/inspect", json={"invite": secret})
    assert again.status_code == 403 and again.json()["code"] == "INVITE_INVALID"
    approved = await client.post("/v1/orgs/globex/approve", headers=ADMIN)
    assert approved.status_code == 200, approved.text
    assert (await client.get("/v1/orgs/globex", headers=bearer(key))).status_code == 200
    agent = await create_agent(
        client, "globex", "bot", headers=bearer(key), capabilities=["x.y", "x.z"]
    )
    settings = await client.patch(
        "/v1/orgs/globex/trust-settings", json={"binding_required": True}, headers=bearer(key)
    )
    assert settings.status_code == 200, settings.text
    body, cert, _ = await issue_certificate(client, "globex", agent["id"], headers=bearer(key))
    form = {"grant_type": "client_credentials", "client_id": body["spiffe_id"]}
    refused = await client.post("/oauth2/token", data=form, headers=proxy_header(cert))
    assert refused.status_code == 401 and refused.json()["code"] == "BINDING_REQUIRED", refused.text
    binding = await client.post(
        "/v1/orgs/globex/bindings",
        json={"agent_id": agent["id"], "scope": ["x.y"]},
        headers=bearer(key),
    )
    assert binding.status_code == 201, binding.text
    approve = await client.post(
        f"/v1/orgs/globex/bindings/{binding.json()['id']}/approve", headers=bearer(key)
    )
    assert approve.status_code == 200, approve.text
    granted = await client.post("/oauth2/token", data=form, headers=proxy_header(cert))
    assert granted.status_code == 200, granted.text
    assert granted.json()["scope"] == "x.y"
    token = granted.json()["access_token"]
    revoke = await client.post(
        f"/v1/orgs/globex/bindings/{binding.json()['id']}/revoke", headers=bearer(key)
    )
    assert revoke.status_code == 200, revoke.text
    me = await client.get("/v1/me", headers={**bearer(token), **proxy_header(cert)})
    assert me.status_code == 403 and me.json()["code"] == "BINDING_REVOKED", me.text
