"""Temporary smoke test of the operations flow."""

from __future__ import annotations

import base64

import httpx

from tabard.core.clock import FrozenClock
from tests.conftest import ADMIN, bearer, create_org


async def test_flow(client: httpx.AsyncClient, clock: FrozenClock) -> None:
    await create_org(client, "acme")
    created = await client.post(
        "/v1/orgs/acme/registration-tokens",
        json={
            "label": "fleet",
            "preset": {"name_pattern": "worker-*", "capabilities": ["db.backup"]},
        },
        headers=ADMIN,
    )
    assert created.status_code == 201, created.text
    reg = created.json()["token"]
    registered = await client.post("/v1/register", json={}, headers=bearer(reg))
    assert registered.status_code == 201, registered.text
    creds = registered.json()
    again = await client.post("/v1/register", json={}, headers=bearer(reg))
    assert again.status_code == 401, again.text
    assert again.json()["code"] == "REGISTRATION_TOKEN_INVALID"
    basic = base64.b64encode(f"{creds['client_id']}:{creds['client_secret']}".encode()).decode()
    tok = await client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert tok.status_code == 200, tok.text
    agent = bearer(tok.json()["access_token"])
    beat = await client.post(
        "/v1/agent/heartbeat",
        json={"instance_id": "i-1", "hostname": "h", "status": {"ok": 1}},
        headers=agent,
    )
    assert beat.status_code == 200, beat.text
    status = await client.get(f"/v1/orgs/acme/agents/{creds['agent_id']}/status", headers=ADMIN)
    assert status.status_code == 200, status.text
    assert status.json()["presence"] == "online", status.text
    declared = await client.put(
        "/v1/agent/actions",
        json={
            "actions": [
                {
                    "name": "backup",
                    "params_schema": {
                        "type": "object",
                        "properties": {"db": {"type": "string"}},
                        "required": ["db"],
                    },
                }
            ]
        },
        headers=agent,
    )
    assert declared.status_code == 200, declared.text
    bad = await client.post(
        f"/v1/orgs/acme/agents/{creds['agent_id']}/commands",
        json={"action": "backup", "params": {"db": 3}},
        headers=ADMIN,
    )
    assert bad.status_code == 422, bad.text
    cmd = await client.post(
        f"/v1/orgs/acme/agents/{creds['agent_id']}/commands",
        json={"action": "backup", "params": {"db": "main"}},
        headers=ADMIN,
    )
    assert cmd.status_code == 201, cmd.text
    polled = await client.get("/v1/agent/commands", params={"instance_id": "i-1"}, headers=agent)
    assert polled.status_code == 200, polled.text
    assert len(polled.json()) == 1
    cid = polled.json()[0]["id"]
    running = await client.post(
        f"/v1/agent/commands/{cid}/running", json={"instance_id": "i-1"}, headers=agent
    )
    assert running.status_code == 200, running.text
    result = await client.post(
        f"/v1/agent/commands/{cid}/result",
        json={
            "instance_id": "i-1",
            "status": "SUCCEEDED",
            "output": {"key": {"__tabard_secret__": "s3cr3t"}, "n": 1},
        },
        headers=agent,
    )
    assert result.status_code == 200, result.text
    assert result.json()["output"] == {"key": "[REDACTED]", "n": 1}
    first = await client.get(
        f"/v1/orgs/acme/agents/{creds['agent_id']}/commands/{cid}", headers=ADMIN
    )
    assert first.json()["output"] == {"key": "s3cr3t", "n": 1}, first.text
    second = await client.get(
        f"/v1/orgs/acme/agents/{creds['agent_id']}/commands/{cid}", headers=ADMIN
    )
    assert second.json()["output"] == {"key": "[REDACTED]", "n": 1}
    clock.advance(120)
    status = await client.get(f"/v1/orgs/acme/agents/{creds['agent_id']}/status", headers=ADMIN)
    assert status.json()["presence"] == "offline", status.text
