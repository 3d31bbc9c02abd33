"""Who may reach webhook subscriptions and their deliveries: the org and the admin; other orgs
see 404, agents 403, unknown ids name what is missing."""

from __future__ import annotations

from typing import Any

import httpx

from tabard.events.service import Events
from tests.conftest import ADMIN, bearer, create_org, create_org_key
from tests.events.conftest import org_with_webhook
from tests.events.subscription_support import (
    URL,
    WEBHOOKS,
    created,
    listed,
    read,
)
from tests.support.webhook_receiver import Receiver
from tests.tokens.support import access_token, agent_client

Route = tuple[str, str, dict[str, Any] | None]  # method, path, JSON body


def collection_routes(org_id: str) -> list[Route]:
    path = f"/v1/orgs/{org_id}/webhooks"
    return [("GET", path, None), ("POST", path, {"url": URL, "event_types": ["*"]})]


def webhook_routes(org_id: str, subscription_id: str, delivery_id: str) -> list[Route]:
    """Every webhook route that names a subscription, with a valid body where it takes one."""
    base = f"/v1/orgs/{org_id}/webhooks/{subscription_id}"
    return [
        ("GET", base, None),
        ("PATCH", base, {"description": "changed"}),
        ("POST", f"{base}/rotate-secret", {"grace_period_seconds": 60}),
        ("POST", f"{base}/test", None),
        ("GET", f"{base}/deliveries", None),
        ("GET", f"{base}/deliveries/{delivery_id}", None),
        ("POST", f"{base}/deliveries/{delivery_id}/replay", None),
        ("POST", f"{base}/replay", None),
        ("DELETE", base, None),
    ]


async def answers(
    client: httpx.AsyncClient, routes: list[Route], headers: dict[str, str]
) -> dict[str, tuple[int, str | None]]:
    """Each route's (status, problem code), called in order with `headers`."""
    found = {}
    for method, path, body in routes:
        response = await client.request(method, path, json=body, headers=headers)
        code = response.json().get("code") if response.status_code >= 400 else None
        found[f"{method} {path}"] = (response.status_code, code)
    return found


def without_delivery_read(found: dict[str, Any], routes: list[Route]) -> dict[str, Any]:
    """`found` less the route that reads one delivery (see the test of unknown subscriptions)."""
    method, path, _ = routes[5]
    return {route: answer for route, answer in found.items() if route != f"{method} {path}"}


async def read_as_admin(
    client: httpx.AsyncClient, org_id: str, subscription_id: str
) -> dict[str, Any]:
    response = await client.get(f"/v1/orgs/{org_id}/webhooks/{subscription_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def webhook_with_delivery(
    client: httpx.AsyncClient, events: Events, receiver: Receiver, org_id: str
) -> tuple[dict[str, Any], str]:
    """Org `org_id` (created) with a subscription and one delivered test event."""
    subscription = await org_with_webhook(client, receiver, org_id)
    test_url = f"/v1/orgs/{org_id}/webhooks/{subscription['id']}/test"
    response = await client.post(test_url, headers=ADMIN)
    assert response.status_code == 202, response.text
    await events.sender.drain()
    return subscription, response.json()["id"]


class TestWebhookAccess:
    async def test_an_org_key_manages_its_own_webhooks(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver
    ) -> None:
        subscription, delivery_id = await webhook_with_delivery(client, events, receiver, "acme")
        key = bearer(await create_org_key(client, "acme"))
        routes = collection_routes("acme") + webhook_routes("acme", subscription["id"], delivery_id)

        found = await answers(client, routes, key)

        assert list(found.values()) == [
            (200, None),
            (201, None),
            (200, None),
            (200, None),
            (200, None),
            (202, None),
            (200, None),
            (200, None),
            (409, "WEBHOOK_DELIVERY_NOT_REPLAYABLE"),  # allowed; only dead ones are replayed
            (200, None),
            (204, None),
        ]

    async def test_another_orgs_key_is_not_found_on_every_route(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver
    ) -> None:
        theirs, delivery_id = await webhook_with_delivery(client, events, receiver, "globex")
        await create_org(client, "acme")
        acme = bearer(await create_org_key(client, "acme"))
        before = await read_as_admin(client, "globex", theirs["id"])
        under_theirs = collection_routes("globex") + webhook_routes(
            "globex", theirs["id"], delivery_id
        )
        under_ours = webhook_routes("acme", theirs["id"], delivery_id)

        found_under_theirs = await answers(client, under_theirs, acme)
        found_under_ours = await answers(client, under_ours, acme)

        assert set(found_under_theirs.values()) == {(404, "ORG_NOT_FOUND")}, found_under_theirs
        assert {status for status, _ in found_under_ours.values()} == {404}, found_under_ours
        found_under_ours = without_delivery_read(found_under_ours, under_ours)
        assert set(found_under_ours.values()) == {(404, "WEBHOOK_SUBSCRIPTION_NOT_FOUND")}
        assert await read_as_admin(client, "globex", theirs["id"]) == before
        assert len(await listed(client, "globex")) == 1
        assert await listed(client) == []

    async def test_an_agent_is_forbidden_on_every_route(self, client: httpx.AsyncClient) -> None:
        bot = await agent_client(client, "acme", "bot")
        agent = bearer(await access_token(client, bot))
        subscription = await created(client)
        routes = collection_routes("acme") + webhook_routes("acme", subscription["id"], "any")

        found = await answers(client, routes, agent)

        assert set(found.values()) == {(403, "NOT_PERMITTED")}, found
        assert [item["id"] for item in await listed(client)] == [subscription["id"]]
        assert (await read(client, subscription))["description"] == ""

    async def test_unknown_ids_are_not_found_on_every_route(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver
    ) -> None:
        _, delivery_id = await webhook_with_delivery(client, events, receiver, "acme")
        routes = webhook_routes("acme", "no-such-webhook", delivery_id)

        found = await answers(client, routes, ADMIN)
        no_org = await answers(client, collection_routes("nowhere"), ADMIN)

        assert {status for status, _ in found.values()} == {404}, found
        found = without_delivery_read(found, routes)
        assert set(found.values()) == {(404, "WEBHOOK_SUBSCRIPTION_NOT_FOUND")}, found
        assert set(no_org.values()) == {(404, "ORG_NOT_FOUND")}, no_org

    async def test_a_delivery_under_an_unknown_subscription_names_the_subscription(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver
    ) -> None:
        _, delivery_id = await webhook_with_delivery(client, events, receiver, "acme")
        path = f"{WEBHOOKS}/no-such-webhook/deliveries/{delivery_id}"

        read_it = await client.get(path, headers=ADMIN)
        replay_it = await client.post(f"{path}/replay", headers=ADMIN)

        # The same path answers the same way whether the delivery is read or replayed.
        assert (read_it.status_code, replay_it.status_code) == (404, 404)
        assert replay_it.json()["code"] == "WEBHOOK_SUBSCRIPTION_NOT_FOUND"
        assert read_it.json()["code"] == "WEBHOOK_SUBSCRIPTION_NOT_FOUND"
