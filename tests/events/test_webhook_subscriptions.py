"""Webhook subscriptions through the HTTP API: created by the org (or the admin) with a signing
secret shown only on creation and rotation and stored sealed; event patterns and URLs checked
under the deployment's policy; updated, resumed, deleted with their deliveries, each change
audited. Rotation keeps the old secret signing for a grace period; signatures are checked with
the Standard Webhooks reference library."""

from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidTag
from pydantic import SecretStr
from sqlalchemy import text
from standardwebhooks import Webhook, WebhookVerificationError

from tabard.core.clock import FrozenClock
from tabard.core.config import production_problems
from tabard.core.runtime import Runtime
from tabard.events import subscriptions
from tabard.events.models import WebhookSubscription
from tabard.events.service import Events
from tests.conftest import ADMIN, ADMIN_SECRET, bearer, create_agent, create_org, create_org_key
from tests.events.conftest import deliver, org_with_webhook
from tests.support.webhook_receiver import Received, Receiver
from tests.tokens.support import access_token, agent_client

WEBHOOKS = "/v1/orgs/acme/webhooks"
URL = "http://127.0.0.1:9/hook"  # loopback; nothing is sent to it in the tests that use it
PRODUCTION = {
    "env": "production",
    "public_url": "https://tabard.example",
    "admin_secret": SecretStr(ADMIN_SECRET),
    "secret_key": SecretStr("production-secret-key-0123456789abcdef"),
    "master_key": SecretStr("production-master-key-0123456789abcdef"),
}
SIGNATURE = re.compile(r"v1,[A-Za-z0-9+/]{43}=")
RETRY_DUE = 15  # seconds: the first retry comes 10 s (±20 %) after a failure


async def create_webhook(
    client: httpx.AsyncClient, headers: dict[str, str] = ADMIN, **fields: Any
) -> httpx.Response:
    return await client.post(
        WEBHOOKS, json={"url": URL, "event_types": ["*"], **fields}, headers=headers
    )


async def created(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await create_webhook(client, **fields)
    assert response.status_code == 201, response.text
    subscription: dict[str, Any] = response.json()
    return subscription


async def read(client: httpx.AsyncClient, subscription: dict[str, Any]) -> dict[str, Any]:
    response = await client.get(f"{WEBHOOKS}/{subscription['id']}", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def listed(client: httpx.AsyncClient, org_id: str = "acme") -> list[dict[str, Any]]:
    response = await client.get(f"/v1/orgs/{org_id}/webhooks", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


async def patch(
    client: httpx.AsyncClient, subscription: dict[str, Any], **fields: Any
) -> httpx.Response:
    return await client.patch(f"{WEBHOOKS}/{subscription['id']}", json=fields, headers=ADMIN)


async def rotate(
    client: httpx.AsyncClient, subscription: dict[str, Any], **body: Any
) -> httpx.Response:
    url = f"{WEBHOOKS}/{subscription['id']}/rotate-secret"
    return await client.post(url, json=body, headers=ADMIN)


async def rotated(client: httpx.AsyncClient, subscription: dict[str, Any], **body: Any) -> str:
    response = await rotate(client, subscription, **body)
    assert response.status_code == 200, response.text
    secret: str = response.json()["secret"]
    return secret


async def audit_events(client: httpx.AsyncClient, action: str) -> list[dict[str, Any]]:
    """The org's audit events of `action`, newest first."""
    params = {"org": "acme", "action": action}
    response = await client.get("/v1/audit", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["items"]
    return events


async def stored(runtime: Runtime, subscription_id: str) -> dict[str, Any]:
    """The subscription's row as the database holds it."""
    statement = text("SELECT * FROM webhook_subscriptions WHERE id = :id")
    async with runtime.database.read_only() as session:
        row = (await session.execute(statement, {"id": subscription_id})).mappings().one()
    return dict(row)


async def delivery_rows(runtime: Runtime) -> tuple[int, int]:
    """(deliveries, attempts) in the database, of every subscription."""
    async with runtime.database.read_only() as session:
        deliveries, attempts = [
            int((await session.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one())
            for table in ("webhook_deliveries", "webhook_attempts")
        ]
    return deliveries, attempts


def key_of(secret: str) -> bytes:
    assert secret.startswith("whsec_")
    return base64.b64decode(secret.removeprefix("whsec_"), validate=True)


def signatures(received: Received) -> list[str]:
    return received.headers["webhook-signature"].split(" ")


async def delivered(
    client: httpx.AsyncClient, events: Events, receiver: Receiver, agent_name: str
) -> Received:
    """The one webhook the registration of an agent named `agent_name` caused."""
    before = len(receiver.received)
    await create_agent(client, "acme", agent_name)
    await deliver(events)
    assert len(receiver.received) == before + 1, receiver.received
    received = receiver.received[-1]
    assert received.event["data"]["agent_name"] == agent_name
    return received


async def outcomes(
    client: httpx.AsyncClient, bodies: dict[str, dict[str, Any]]
) -> dict[str, tuple[int, str]]:
    """(status, problem code) of creating acme's webhook with each of `bodies`, by name."""
    found = {}
    for name, fields in bodies.items():
        response = await create_webhook(client, **fields)
        found[name] = (response.status_code, response.json().get("code", ""))
    return found


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


class TestRotateSecret:
    async def test_a_new_secret_is_shown_once_and_the_rotation_audited(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        await create_org(client, "acme")
        subscription = await created(client)
        clock.advance(10)

        response = await rotate(client, subscription)

        assert response.status_code == 200, response.text
        body = response.json()
        assert len(key_of(body["secret"])) == 32
        assert body["secret"] != subscription["secret"]
        expires = datetime.fromisoformat(body["previous_secret_expires_at"])
        assert expires == clock.now() + timedelta(seconds=86400)  # the default grace: a day
        assert datetime.fromisoformat(body["updated_at"]) == clock.now()
        shown = (await client.get(f"{WEBHOOKS}/{subscription['id']}", headers=ADMIN)).text
        events = await audit_events(client, "webhook.secret_rotated")
        assert [event["target"] for event in events] == [subscription["id"]]
        assert events[0]["request_id"] == response.headers["x-request-id"]
        assert events[0]["details"]["grace_period_seconds"] == 86400
        for secret in (body["secret"], subscription["secret"]):
            assert secret not in shown
            assert secret not in str(events)

    async def test_during_the_grace_period_the_old_and_the_new_secret_sign(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver
    ) -> None:
        subscription = await org_with_webhook(client, receiver, event_types=["agent.created"])
        old = subscription["secret"]
        new = await rotated(client, subscription, grace_period_seconds=3600)

        receiver.secrets[:] = [old]
        by_old = await delivered(client, events, receiver, "old-bot")
        receiver.secrets[:] = [new]
        by_new = await delivered(client, events, receiver, "new-bot")

        assert by_old.verified_by == [old]
        assert by_new.verified_by == [new]
        assert len(signatures(by_old)) == len(signatures(by_new)) == 2

    async def test_the_old_secret_stops_signing_when_the_grace_period_ends(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver, clock: FrozenClock
    ) -> None:
        subscription = await org_with_webhook(client, receiver, event_types=["agent.created"])
        old = subscription["secret"]
        response = await rotate(client, subscription, grace_period_seconds=60)
        new = response.json()["secret"]
        expires = datetime.fromisoformat(response.json()["previous_secret_expires_at"])
        receiver.secrets[:] = [old, new]

        clock.advance(59)
        before_the_end = await delivered(client, events, receiver, "early-bot")
        clock.advance(2)
        assert clock.now() > expires
        after_the_end = await delivered(client, events, receiver, "late-bot")

        assert before_the_end.verified_by == [old, new]
        assert after_the_end.verified_by == [new]
        assert len(signatures(after_the_end)) == 1
        assert int(after_the_end.headers["webhook-timestamp"]) == int(clock.now().timestamp())

    async def test_without_a_grace_period_the_old_secret_stops_at_once(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver
    ) -> None:
        subscription = await org_with_webhook(client, receiver, event_types=["agent.created"])
        old = subscription["secret"]

        response = await rotate(client, subscription, grace_period_seconds=0)

        assert response.status_code == 200, response.text
        assert response.json()["previous_secret_expires_at"] is None
        new = response.json()["secret"]
        receiver.secrets[:] = [old, new]
        received = await delivered(client, events, receiver, "prompt-bot")
        assert received.verified_by == [new]
        assert len(signatures(received)) == 1

    async def test_a_second_rotation_retires_the_first_secret(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver
    ) -> None:
        subscription = await org_with_webhook(client, receiver, event_types=["agent.created"])
        first = subscription["secret"]
        second = await rotated(client, subscription, grace_period_seconds=3600)

        third = await rotated(client, subscription, grace_period_seconds=3600)

        receiver.secrets[:] = [first, second, third]
        received = await delivered(client, events, receiver, "rotated-bot")
        assert received.verified_by == [second, third]

    async def test_the_grace_period_is_at_most_seven_days(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver, clock: FrozenClock
    ) -> None:
        subscription = await org_with_webhook(client, receiver, event_types=["agent.created"])

        refused = [
            await rotate(client, subscription, grace_period_seconds=seconds)
            for seconds in (7 * 86400 + 1, -1)
        ]
        received = await delivered(client, events, receiver, "unrotated-bot")
        longest = await rotate(client, subscription, grace_period_seconds=7 * 86400)

        fields = [response.json()["errors"][0]["field"] for response in refused]
        assert [response.status_code for response in refused] == [422, 422]
        assert fields == ["body.grace_period_seconds"] * 2
        assert received.verified_by == [subscription["secret"]]  # the refusals changed nothing
        assert len(signatures(received)) == 1
        assert longest.status_code == 200, longest.text
        expires = datetime.fromisoformat(longest.json()["previous_secret_expires_at"])
        assert expires == clock.now() + timedelta(days=7)
        assert len(await audit_events(client, "webhook.secret_rotated")) == 1


class TestSignatures:
    async def test_the_reference_library_verifies_a_delivery_and_not_a_tampered_one(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver
    ) -> None:
        subscription = await org_with_webhook(client, receiver, event_types=["agent.created"])
        webhook = Webhook(subscription["secret"])

        received = await delivered(client, events, receiver, "signed-bot")

        # At the real time (the clock starts at it), so the library's timestamp check passes.
        event = webhook.verify(received.body, received.headers)
        assert event == received.event
        assert (event["type"], event["org"]) == ("agent.created", "acme")
        assert received.headers["webhook-id"] == event["id"]
        assert [SIGNATURE.fullmatch(part) is not None for part in signatures(received)] == [True]
        assert received.headers["content-type"] == "application/json"
        tampered = received.body.replace(b"signed-bot", b"forged-bot")
        assert tampered != received.body
        with pytest.raises(WebhookVerificationError):
            webhook.verify(tampered, received.headers)

    async def test_a_retry_is_signed_at_its_own_time_under_the_same_id(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver, clock: FrozenClock
    ) -> None:
        await org_with_webhook(client, receiver, event_types=["agent.created"])
        receiver.answer(500)
        first = await delivered(client, events, receiver, "retried-bot")
        clock.advance(RETRY_DUE)

        await deliver(events)

        assert len(receiver.verified()) == 2
        retry = receiver.received[-1]
        assert retry.id == first.id
        assert retry.body == first.body
        assert int(retry.headers["webhook-timestamp"]) == int(clock.timestamp())
        assert int(first.headers["webhook-timestamp"]) == int(clock.timestamp()) - RETRY_DUE


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
