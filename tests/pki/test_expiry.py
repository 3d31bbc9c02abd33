"""Certificate expiry jobs: the expiring-soon gauge on /metrics and the one `certificate.expiring`
audit event per certificate entering its last 7 days."""

from __future__ import annotations

from typing import Any

import httpx

from tabard.core.clock import FrozenClock
from tabard.core.runtime import Runtime
from tabard.pki.jobs import announce_expiring_once, update_expiring_gauge_once
from tests.conftest import ADMIN, bearer, create_agent, create_org
from tests.pki.support import generate_ca, issue_certificate

DAY = 86400


async def thirty_day_lifetime(client: httpx.AsyncClient) -> None:
    response = await client.patch(
        "/v1/orgs/acme/pki-settings",
        json={"certificate_lifetime_seconds": 30 * DAY},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text


async def acme_agent_with_ca(client: httpx.AsyncClient) -> dict[str, Any]:
    await create_org(client, "acme")
    await generate_ca(client, "acme")
    return await create_agent(client, "acme", "bot")


async def gauge_line(client: httpx.AsyncClient, runtime: Runtime) -> str:
    token = runtime.settings.metrics_token
    headers = bearer(token.get_secret_value()) if token is not None else {}
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    [line] = [
        line
        for line in response.text.splitlines()
        if line.startswith('tabard_credentials_expiring_soon{kind="certificate"}')
    ]
    return line


async def expiring_events(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get(
        "/v1/audit", params={"org": "acme", "action": "certificate.expiring"}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["items"]
    return events


class TestExpiringGauge:
    async def test_counts_active_certificates_expiring_within_a_week(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        agent = await acme_agent_with_ca(client)
        await issue_certificate(client, "acme", agent["id"])
        revoked, _, _ = await issue_certificate(client, "acme", agent["id"])
        response = await client.post(
            "/v1/orgs/acme/certificate-revocations",
            json={"certificate_id": revoked["id"]},
            headers=ADMIN,
        )
        assert response.status_code == 201, response.text
        await thirty_day_lifetime(client)
        await issue_certificate(client, "acme", agent["id"])
        assert await update_expiring_gauge_once(runtime.database, runtime.clock) == 1
        assert await gauge_line(client, runtime) == (
            'tabard_credentials_expiring_soon{kind="certificate"} 1.0'
        )

    async def test_certificates_move_through_the_window_as_time_passes(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        agent = await acme_agent_with_ca(client)
        await issue_certificate(client, "acme", agent["id"])
        await thirty_day_lifetime(client)
        await issue_certificate(client, "acme", agent["id"])
        assert await update_expiring_gauge_once(runtime.database, runtime.clock) == 1
        clock.advance(2 * DAY)  # the 24 h certificate has expired
        assert await update_expiring_gauge_once(runtime.database, runtime.clock) == 0
        assert await gauge_line(client, runtime) == (
            'tabard_credentials_expiring_soon{kind="certificate"} 0.0'
        )
        clock.advance(22 * DAY)  # 6 days left on the 30-day certificate
        assert await update_expiring_gauge_once(runtime.database, runtime.clock) == 1
        clock.advance(7 * DAY)
        assert await update_expiring_gauge_once(runtime.database, runtime.clock) == 0


class TestAnnounceExpiring:
    async def test_each_certificate_is_announced_exactly_once(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        agent = await acme_agent_with_ca(client)
        short, _, _ = await issue_certificate(client, "acme", agent["id"])
        await thirty_day_lifetime(client)
        await issue_certificate(client, "acme", agent["id"])
        assert await announce_expiring_once(runtime.database, runtime.clock) == 1
        assert await announce_expiring_once(runtime.database, runtime.clock) == 0
        [event] = await expiring_events(client)
        assert event["target"] == short["id"]
        assert event["details"]["certificate_id"] == short["id"]
        assert event["details"]["agent_id"] == agent["id"]
        assert event["details"]["serial"] == short["serial"]

    async def test_a_longer_certificate_is_announced_when_it_enters_its_last_week(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        agent = await acme_agent_with_ca(client)
        await thirty_day_lifetime(client)
        long, _, _ = await issue_certificate(client, "acme", agent["id"])
        assert await announce_expiring_once(runtime.database, runtime.clock) == 0
        assert await expiring_events(client) == []
        clock.advance(23 * DAY + 60)
        assert await announce_expiring_once(runtime.database, runtime.clock) == 1
        assert await announce_expiring_once(runtime.database, runtime.clock) == 0
        assert [event["target"] for event in await expiring_events(client)] == [long["id"]]

    async def test_revoked_certificates_are_not_announced(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        agent = await acme_agent_with_ca(client)
        issued, _, _ = await issue_certificate(client, "acme", agent["id"])
        response = await client.post(
            "/v1/orgs/acme/certificate-revocations",
            json={"certificate_id": issued["id"], "reason": "keyCompromise"},
            headers=ADMIN,
        )
        assert response.status_code == 201, response.text
        assert await announce_expiring_once(runtime.database, runtime.clock) == 0
        assert await expiring_events(client) == []
