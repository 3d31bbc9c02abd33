"""Webhook subscriptions through the HTTP API: created by the org (or the admin) with a signing
secret shown only on creation and rotation and stored sealed; event patterns and URLs checked
under the deployment's policy; updated, resumed, deleted with their deliveries, each change
audited."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidTag

from tabard.core.clock import FrozenClock
from tabard.core.config import production_problems
from tabard.core.runtime import Runtime
from tabard.events import subscriptions
from tabard.events.models import WebhookSubscription
from tabard.events.service import Events
from tests.conftest import ADMIN, bearer, create_agent, create_org, create_org_key
from tests.events.conftest import deliver, org_with_webhook
from tests.events.subscription_support import (
    PRODUCTION,
    RETRY_DUE,
    URL,
    WEBHOOKS,
    audit_events,
    create_webhook,
    created,
    delivery_rows,
    key_of,
    listed,
    outcomes,
    patch,
    read,
    stored,
)
from tests.support.webhook_receiver import Receiver


class TestCreateWebhook:
    async def test_an_org_key_creates_a_subscription_and_sees_its_secret(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        key = bearer(await create_org_key(client, "acme"))

        response = await create_webhook(client, key, event_types=["agent.*"], description="billing")

        assert response.status_code == 201, response.text
        body = response.json()
        assert len(key_of(body["secret"])) == 32
        assert (body["org_id"], body["url"], body["description"]) == ("acme", URL, "billing")
        assert (body["event_types"], body["active"]) == (["agent.*"], True)
        assert (body["paused_at"], body["consecutive_failures"]) == (None, 0)
        assert body["previous_secret_expires_at"] is None
        assert datetime.fromisoformat(body["created_at"]) == clock.now()
        assert [item["id"] for item in await listed(client)] == [body["id"]]
        assert (await created(client))["secret"] != body["secret"]

    async def test_the_secret_is_stored_sealed_for_its_own_subscription(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        subscription, other = await created(client), await created(client)
        secret = subscription["secret"]

        row = await stored(runtime, subscription["id"])

        sealed = bytes(row["sealed_secret"])
        assert secret.encode() not in sealed
        assert secret.removeprefix("whsec_").encode() not in sealed
        assert key_of(secret) not in sealed
        assert secret not in " ".join(str(value) for value in row.values())
        async with runtime.database.read_only() as session:
            mine = await session.get(WebhookSubscription, subscription["id"])
            theirs = await session.get(WebhookSubscription, other["id"])
        assert mine is not None
        assert theirs is not None
        assert subscriptions.signing_secrets(runtime.keystore, mine, clock.now()) == [secret]
        theirs.sealed_secret = sealed  # a sealed secret copied to another row does not open
        with pytest.raises(InvalidTag):
            subscriptions.signing_secrets(runtime.keystore, theirs, clock.now())

    async def test_known_patterns_are_accepted_and_duplicates_collapsed(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        accepted = [
            ["*"],
            ["agent.*"],
            ["agent.created"],
            ["org.api_key.*", "credential.*", "org.deleted"],
        ]

        found = [
            (await created(client, event_types=patterns))["event_types"] for patterns in accepted
        ]
        collapsed = await created(
            client, event_types=["agent.created", "agent.*", "agent.created", "agent.*"]
        )

        assert found == accepted
        assert collapsed["event_types"] == ["agent.created", "agent.*"]
        assert (await read(client, collapsed))["event_types"] == ["agent.created", "agent.*"]

    async def test_an_unknown_event_type_is_400_naming_it(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")

        response = await create_webhook(
            client, event_types=["agent.created", "agent.exploded", "nothing.*"]
        )

        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "UNKNOWN_EVENT_TYPE"
        assert response.json()["unknown"] == ["agent.exploded", "nothing.*"]
        assert "agent.exploded" in response.json()["detail"]
        assert await listed(client) == []
        assert await audit_events(client, "webhook.created") == []

    async def test_a_malformed_body_is_422_and_stores_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        malformed = ["Agent.Created", "agent.", "agent*", "*.created", "agent.**", "a b", ""]
        bodies = {repr(pattern): {"event_types": [pattern]} for pattern in malformed}
        bodies["no types"] = {"event_types": []}
        bodies["a long description"] = {"description": "x" * 501}
        bodies["a secret of one's own"] = {"secret": "whsec_" + "A" * 44}

        found = await outcomes(client, bodies)

        assert set(found.values()) == {(422, "VALIDATION_FAILED")}, found
        assert await listed(client) == []

    async def test_a_url_allowed_in_development_is_accepted(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        urls = [
            "http://127.0.0.1:8000/hook",
            "http://localhost:8000/hook",
            "http://[::1]:8000/hook",
            "https://hooks.example.com/tabard?source=acme",
        ]

        found = [(await created(client, url=url))["url"] for url in urls]

        assert found == urls

    async def test_a_url_not_allowed_is_400_saying_why(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        refused = {
            "http://example.com/hook": "loopback addresses only",
            "http://10.0.0.1/hook": "loopback addresses only",
            "http://127.0.0.1.nip.io/hook": "loopback addresses only",
            "http://user:password@127.0.0.1:8000/hook": "credentials",
            "https://token@hooks.example.com/hook": "credentials",
            "ftp://127.0.0.1/hook": "absolute http(s) URL",
            "file:///etc/passwd": "absolute http(s) URL",
            "javascript:alert(1)": "absolute http(s) URL",
            "//hooks.example.com/hook": "absolute http(s) URL",
        }

        found = {}
        for url, reason in refused.items():
            response = await create_webhook(client, url=url)
            problem = response.json()
            found[url] = (response.status_code, problem["code"], reason in problem["detail"])

        assert set(found.values()) == {(400, "INVALID_WEBHOOK_URL", True)}, found
        assert response.headers["content-type"] == "application/problem+json"
        assert await listed(client) == []
        assert await audit_events(client, "webhook.created") == []

    async def test_creating_is_audited_with_the_request(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        key = bearer(await create_org_key(client, "acme"))

        response = await create_webhook(client, key, event_types=["agent.*"])

        subscription = response.json()
        events = await audit_events(client, "webhook.created")
        assert [(event["target"], event["actor_kind"]) for event in events] == [
            (subscription["id"], "org_key")
        ]
        assert events[0]["request_id"] == response.headers["x-request-id"]
        assert events[0]["occurred_at"] == subscription["created_at"]
        assert events[0]["details"] == {
            "subscription_id": subscription["id"],
            "url": URL,
            "event_types": ["agent.*"],
            "active": True,
        }
        assert subscription["secret"] not in str(events)


class TestSubscriptionLimit:
    @pytest.fixture
    def overrides(self) -> dict[str, Any]:
        return {"webhook_max_subscriptions_per_org": 2}

    async def test_an_org_at_its_limit_gets_no_more_until_it_deletes_one(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        first, _ = await created(client), await created(client)

        refused = await create_webhook(client)
        elsewhere = await client.post(
            "/v1/orgs/globex/webhooks", json={"url": URL, "event_types": ["*"]}, headers=ADMIN
        )
        await client.delete(f"{WEBHOOKS}/{first['id']}", headers=ADMIN)
        after_deleting = await create_webhook(client)

        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "WEBHOOK_SUBSCRIPTION_LIMIT_REACHED"
        assert (elsewhere.status_code, after_deleting.status_code) == (201, 201)
        assert len(await listed(client)) == 2
        assert len(await audit_events(client, "webhook.created")) == 3


class TestCreateWebhookInProduction:
    @pytest.fixture
    def overrides(self) -> dict[str, Any]:
        return PRODUCTION

    async def test_plain_http_is_refused_even_to_loopback(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        assert production_problems(runtime.settings) == []  # a deployment that would start
        await create_org(client, "acme")
        urls = ["http://127.0.0.1:8000/hook", "http://localhost/hook", "http://example.com/hook"]

        found = {}
        for url in urls:
            response = await create_webhook(client, url=url)
            problem = response.json()
            found[url] = (response.status_code, problem["code"], problem["detail"])

        expected = (400, "INVALID_WEBHOOK_URL", "production deployments send to https URLs only")
        assert set(found.values()) == {expected}, found
        assert await listed(client) == []

    async def test_an_https_url_is_accepted_and_cannot_become_http(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        subscription = await created(client, url="https://hooks.example.com/hook")

        response = await patch(client, subscription, url="http://127.0.0.1:8000/hook")

        assert response.status_code == 400, response.text
        assert response.json()["code"] == "INVALID_WEBHOOK_URL"
        assert (await read(client, subscription))["url"] == "https://hooks.example.com/hook"


class TestReadWebhooks:
    async def test_reading_listing_and_updating_never_show_the_secret(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        subscription = await created(client)
        secret = subscription["secret"]

        responses = [
            await client.get(f"{WEBHOOKS}/{subscription['id']}", headers=ADMIN),
            await client.get(WEBHOOKS, headers=ADMIN),
            await patch(client, subscription, description="changed"),
        ]

        assert [response.status_code for response in responses] == [200, 200, 200]
        assert all(secret not in response.text for response in responses)
        assert all(key_of(secret).hex() not in response.text for response in responses)
        assert "secret" not in responses[0].json()
        assert "secret" not in responses[1].json()[0]
        assert "secret" not in responses[2].json()
        expected = {name: value for name, value in subscription.items() if name != "secret"}
        assert responses[0].json() == expected

    async def test_the_list_is_in_creation_order_and_only_the_orgs_own(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        first = await created(client, description="first")
        response = await client.post(
            "/v1/orgs/globex/webhooks", json={"url": URL, "event_types": ["*"]}, headers=ADMIN
        )
        assert response.status_code == 201, response.text
        second, third = await created(client), await created(client)

        ids = [item["id"] for item in await listed(client)]

        assert ids == [first["id"], second["id"], third["id"]]
        assert [item["id"] for item in await listed(client, "globex")] == [response.json()["id"]]


class TestUpdateWebhook:
    async def test_url_types_description_and_active_change(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        subscription = await created(client, event_types=["*"], description="old")
        clock.advance(30)

        response = await patch(
            client,
            subscription,
            url="http://localhost:9000/new",
            event_types=["credential.*", "agent.created", "credential.*"],
            description="new",
            active=False,
        )

        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["url"], body["description"], body["active"]) == (
            "http://localhost:9000/new",
            "new",
            False,
        )
        assert body["event_types"] == ["credential.*", "agent.created"]
        assert datetime.fromisoformat(body["updated_at"]) == clock.now()
        assert body["created_at"] == subscription["created_at"]
        assert await read(client, subscription) == body

    async def test_fields_left_out_keep_their_values(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        subscription = await created(client, event_types=["agent.*"], description="billing")

        response = await patch(client, subscription, description="")

        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["url"], body["event_types"], body["active"]) == (URL, ["agent.*"], True)
        assert body["description"] == ""

    async def test_bad_input_changes_nothing(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        subscription = await created(client, event_types=["agent.*"], description="billing")
        before = await read(client, subscription)
        clock.advance(30)
        refused: list[tuple[dict[str, Any], int, str]] = [
            ({"url": "http://example.com/hook"}, 400, "INVALID_WEBHOOK_URL"),
            ({"url": "https://user:pw@hooks.example.com/"}, 400, "INVALID_WEBHOOK_URL"),
            ({"url": "gopher://127.0.0.1/"}, 400, "INVALID_WEBHOOK_URL"),
            ({"description": "new", "url": "http://example.com/"}, 400, "INVALID_WEBHOOK_URL"),
            ({"event_types": ["agent.exploded"]}, 400, "UNKNOWN_EVENT_TYPE"),
            ({"active": False, "event_types": ["nothing.*"]}, 400, "UNKNOWN_EVENT_TYPE"),
            ({"event_types": ["Agent.*"]}, 422, "VALIDATION_FAILED"),
            ({"event_types": []}, 422, "VALIDATION_FAILED"),
            ({"description": "x" * 501}, 422, "VALIDATION_FAILED"),
            ({"secret": "whsec_" + "A" * 44}, 422, "VALIDATION_FAILED"),
        ]

        found, expected = [], []
        for fields, status, code in refused:
            response = await patch(client, subscription, **fields)
            found.append((fields, response.status_code, response.json()["code"]))
            expected.append((fields, status, code))

        assert found == expected
        assert await read(client, subscription) == before
        assert await audit_events(client, "webhook.updated") == []

    async def test_updating_is_audited(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        subscription = await created(client, event_types=["*"])

        response = await patch(client, subscription, event_types=["agent.*"], active=False)

        events = await audit_events(client, "webhook.updated")
        assert [event["target"] for event in events] == [subscription["id"]]
        assert events[0]["request_id"] == response.headers["x-request-id"]
        assert events[0]["details"] == {
            "subscription_id": subscription["id"],
            "url": URL,
            "event_types": ["agent.*"],
            "active": False,
        }


class TestResumeWebhook:
    @pytest.fixture
    def overrides(self) -> dict[str, Any]:
        return {"webhook_pause_after_failures": 1}

    async def paused(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver
    ) -> dict[str, Any]:
        """A subscription paused by a failed delivery (its retry pending)."""
        subscription = await org_with_webhook(client, receiver, event_types=["agent.created"])
        receiver.answer(500)
        await create_agent(client, "acme", "flaky-bot")
        await deliver(events)
        paused = await read(client, subscription)
        assert (paused["active"], paused["consecutive_failures"]) == (False, 1)
        assert paused["paused_at"] is not None
        return paused

    async def test_active_true_resumes_with_a_fresh_failure_count(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver, clock: FrozenClock
    ) -> None:
        subscription = await self.paused(client, events, receiver)

        response = await patch(client, subscription, active=True)

        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["active"], body["paused_at"], body["consecutive_failures"]) == (True, None, 0)
        clock.advance(RETRY_DUE)
        await deliver(events)
        assert len(receiver.verified()) == 2  # the retry went out once it was resumed

    async def test_other_changes_leave_it_paused(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver, clock: FrozenClock
    ) -> None:
        subscription = await self.paused(client, events, receiver)

        response = await patch(client, subscription, description="still broken")

        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["active"], body["consecutive_failures"]) == (False, 1)
        assert body["paused_at"] == subscription["paused_at"]
        clock.advance(RETRY_DUE)
        await deliver(events)
        assert len(receiver.received) == 1


class TestDeleteWebhook:
    async def test_deleting_removes_it_and_its_deliveries(
        self, client: httpx.AsyncClient, runtime: Runtime, events: Events, receiver: Receiver
    ) -> None:
        subscription = await org_with_webhook(client, receiver, event_types=["agent.created"])
        await create_agent(client, "acme", "first-bot")
        await deliver(events)
        assert await delivery_rows(runtime) == (1, 1)

        response = await client.delete(f"{WEBHOOKS}/{subscription['id']}", headers=ADMIN)

        assert response.status_code == 204, response.text
        assert response.content == b""
        again = await client.get(f"{WEBHOOKS}/{subscription['id']}", headers=ADMIN)
        assert again.status_code == 404, again.text
        assert again.json()["code"] == "WEBHOOK_SUBSCRIPTION_NOT_FOUND"
        assert await listed(client) == []
        assert await delivery_rows(runtime) == (0, 0)
        await create_agent(client, "acme", "late-bot")
        await deliver(events)
        assert len(receiver.received) == 1  # nothing more is sent to it

    async def test_deleting_is_audited_once(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        subscription = await created(client, event_types=["agent.*"])

        response = await client.delete(f"{WEBHOOKS}/{subscription['id']}", headers=ADMIN)
        again = await client.delete(f"{WEBHOOKS}/{subscription['id']}", headers=ADMIN)

        assert again.status_code == 404, again.text
        assert again.json()["code"] == "WEBHOOK_SUBSCRIPTION_NOT_FOUND"
        events = await audit_events(client, "webhook.deleted")
        assert [event["target"] for event in events] == [subscription["id"]]
        assert events[0]["request_id"] == response.headers["x-request-id"]
        assert events[0]["details"]["event_types"] == ["agent.*"]
