"""Webhook deliveries end to end, to real receivers on loopback: signed envelopes, fan-out to the
subscriptions that want an event, retries with backoff, dead letters and replay, timeouts,
pausing a failing subscription, per-subscription concurrency, test events, leases shared by
two senders, and retention."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tabard.api.app import build_runtime
from tabard.core import outbox
from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tabard.core.metrics import REGISTRY
from tabard.core.outbox import OutboxEvent
from tabard.core.runtime import Runtime
from tabard.events import relay
from tabard.events.models import WebhookAttempt, WebhookDelivery
from tabard.events.sender import RETRY_DELAYS
from tabard.events.service import Events
from tests.conftest import ADMIN, create_agent, create_org
from tests.events.conftest import deliver, subscribe
from tests.support.webhook_receiver import Receiver

JITTER = 0.2


@pytest.fixture
def receivers() -> Iterator[Callable[[], Receiver]]:
    """More receivers than the one `receiver` fixture: each call starts another."""
    started: list[Receiver] = []

    def start() -> Receiver:
        started.append(Receiver())
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture
async def second_sender(
    settings: Settings, clock: FrozenClock, runtime: Runtime
) -> AsyncIterator[Events]:
    """Another process's events machinery on the same database (its own engine and bus)."""
    other = build_runtime(settings, clock=clock, kv=runtime.kv)
    events = Events(other.database, other.bus, other.keystore, settings, clock)
    yield events
    await events.close()
    await other.bus.close()
    await other.database.close()


async def quiet_org(client: httpx.AsyncClient, events: Events, org_id: str = "acme") -> None:
    """An org whose own `org.created` is relayed before anyone subscribes to it."""
    await create_org(client, org_id)
    await deliver(events)


async def acme_subscribed(
    client: httpx.AsyncClient, events: Events, receiver: Receiver, **kwargs: Any
) -> dict[str, Any]:
    await quiet_org(client, events)
    return await subscribe(client, receiver, **kwargs)


def webhook_url(subscription: dict[str, Any], suffix: str = "") -> str:
    return f"/v1/orgs/{subscription['org_id']}/webhooks/{subscription['id']}{suffix}"


async def read_subscription(
    client: httpx.AsyncClient, subscription: dict[str, Any]
) -> dict[str, Any]:
    response = await client.get(webhook_url(subscription), headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def listed(
    client: httpx.AsyncClient, subscription: dict[str, Any], **params: Any
) -> dict[str, Any]:
    response = await client.get(
        webhook_url(subscription, "/deliveries"), params=params, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def the_delivery(client: httpx.AsyncClient, subscription: dict[str, Any]) -> dict[str, Any]:
    [delivery] = (await listed(client, subscription))["items"]
    found: dict[str, Any] = delivery
    return found


async def send_after(events: Events, clock: FrozenClock, seconds: float) -> int:
    """Move Tabard's clock, send what is due then, and wait for the attempts; how many went."""
    clock.advance(seconds)
    started = await events.send_due()
    await events.sender.drain()
    return started


async def send_all(events: Events) -> int:
    """Send what is due, round after round (a failing subscription gets one slot at a time),
    until nothing more is due; how many attempts went."""
    total = 0
    while started := await events.send_due():
        await events.sender.drain()
        total += started
    return total


def seconds_until(clock: FrozenClock, moment: str) -> float:
    return (datetime.fromisoformat(moment) - clock.now()).total_seconds()


async def audit_of(client: httpx.AsyncClient, action: str) -> list[dict[str, Any]]:
    response = await client.get(
        "/v1/audit", params={"org": "acme", "action": action}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def dead_letters(event_type: str) -> float:
    sample = REGISTRY.get_sample_value(
        "tabard_webhook_dead_letters_total", {"event_type": event_type}
    )
    return sample or 0.0


async def count(runtime: Runtime, model: type[Any], *where: Any) -> int:
    async with runtime.database.read_only() as session:
        statement = select(func.count()).select_from(model).where(*where)
        return int((await session.execute(statement)).scalar_one())


async def succeeded(runtime: Runtime, subscription: dict[str, Any]) -> int:
    return await count(
        runtime,
        WebhookDelivery,
        WebhookDelivery.subscription_id == subscription["id"],
        WebhookDelivery.status == "succeeded",
    )


class TestDelivery:
    async def test_an_event_reaches_the_receiver_signed_as_its_envelope(
        self,
        client: httpx.AsyncClient,
        events: Events,
        receiver: Receiver,
        runtime: Runtime,
        clock: FrozenClock,
    ) -> None:
        subscription = await acme_subscribed(client, events, receiver)
        clock.advance(7.6)  # the timestamp is the clock's, in whole seconds
        agent = await create_agent(client)

        await deliver(events)

        [received] = receiver.received
        async with runtime.database.read_only() as session:
            row = (
                await session.execute(
                    select(OutboxEvent).where(OutboxEvent.type == "agent.created")
                )
            ).scalar_one()
        assert received.verified_by == [subscription["secret"]]
        assert received.headers["webhook-id"] == row.id
        assert received.headers["webhook-timestamp"] == str(int(clock.now().timestamp()))
        assert received.headers["content-type"] == "application/json"
        assert received.event == {
            "id": row.id,
            "type": "agent.created",
            "org": "acme",
            "time": clock.now().isoformat().replace("+00:00", "Z"),
            "subject": agent["id"],
            "data": {
                "agent_id": agent["id"],
                "agent_name": "invoice-bot",
                "did": agent["did"],
                "environment": agent["environment"],
                "visibility": agent["visibility"],
            },
        }

    async def test_the_delivery_is_listed_with_its_attempt(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver, clock: FrozenClock
    ) -> None:
        subscription = await acme_subscribed(client, events, receiver)
        await create_agent(client)

        await deliver(events)

        page = await listed(client, subscription)
        [delivery] = page["items"]
        assert page["next_cursor"] is None
        assert delivery["subscription_id"] == subscription["id"]
        assert delivery["event_id"] == receiver.received[0].id
        assert (delivery["event_type"], delivery["status"], delivery["attempts"]) == (
            "agent.created",
            "succeeded",
            1,
        )
        assert datetime.fromisoformat(delivery["delivered_at"]) == clock.now()
        assert delivery["next_attempt_at"] is None
        assert delivery["dead_at"] is None
        [attempt] = delivery["attempt_log"]
        assert attempt["number"] == 1
        assert attempt["status_code"] == 204
        assert attempt["error"] is None
        assert isinstance(attempt["duration_ms"], int)
        assert 0 <= attempt["duration_ms"] < 5000
        response = await client.get(
            webhook_url(subscription, f"/deliveries/{delivery['id']}"), headers=ADMIN
        )
        assert response.status_code == 200, response.text
        assert response.json() == delivery

    async def test_an_unknown_delivery_is_not_found(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver
    ) -> None:
        subscription = await acme_subscribed(client, events, receiver)

        response = await client.get(webhook_url(subscription, "/deliveries/nope"), headers=ADMIN)

        assert response.status_code == 404, response.text
        assert response.json()["code"] == "WEBHOOK_DELIVERY_NOT_FOUND"

    async def test_deliveries_are_filtered_by_status(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver
    ) -> None:
        subscription = await acme_subscribed(client, events, receiver)
        await create_agent(client, name="delivered-bot")
        await deliver(events)
        receiver.answer(500)
        await create_agent(client, name="failing-bot")
        await deliver(events)

        succeeded = (await listed(client, subscription, status="succeeded"))["items"]
        pending = (await listed(client, subscription, status="pending"))["items"]
        dead = (await listed(client, subscription, status="dead"))["items"]

        assert [d["status"] for d in succeeded] == ["succeeded"]
        assert [d["status"] for d in pending] == ["pending"]
        assert dead == []
        assert {succeeded[0]["event_id"], pending[0]["event_id"]} == set(receiver.ids())

    async def test_pages_follow_the_cursor(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver
    ) -> None:
        subscription = await acme_subscribed(client, events, receiver)
        for name in ("bot-a", "bot-b", "bot-c"):
            await create_agent(client, name=name)
        await deliver(events)

        seen: list[str] = []
        params: dict[str, Any] = {"limit": 1}
        for _ in range(3):
            page = await listed(client, subscription, **params)
            assert len(page["items"]) == 1
            seen.append(page["items"][0]["event_id"])
            params["cursor"] = page["next_cursor"]

        assert params["cursor"] is None  # the third page was the last
        assert sorted(seen) == sorted(receiver.ids())
        assert len(set(seen)) == 3


class TestFanOut:
    async def test_only_matching_active_subscriptions_of_the_org_get_a_delivery(
        self,
        client: httpx.AsyncClient,
        events: Events,
        receivers: Callable[[], Receiver],
    ) -> None:
        await quiet_org(client, events)
        await quiet_org(client, events, "globex")
        family, credentials, exact, inactive, other_org = (receivers() for _ in range(5))
        await subscribe(client, family, event_types=["agent.*"])
        await subscribe(client, credentials, event_types=["credential.*"])
        await subscribe(client, exact, event_types=["agent.created"])
        response = await client.post(
            "/v1/orgs/acme/webhooks",
            json={"url": inactive.url, "event_types": ["*"], "active": False},
            headers=ADMIN,
        )
        assert response.status_code == 201, response.text
        inactive.secrets.append(response.json()["secret"])
        await subscribe(client, other_org, "globex")
        agent = await create_agent(client)
        created = await client.post(
            f"/v1/orgs/acme/agents/{agent['id']}/credentials", json={}, headers=ADMIN
        )
        assert created.status_code == 201, created.text
        updated = await client.patch(
            f"/v1/orgs/acme/agents/{agent['id']}", json={"description": "pays"}, headers=ADMIN
        )
        assert updated.status_code == 200, updated.text

        await deliver(events)

        def types(receiver: Receiver) -> list[str]:
            return sorted(item.event["type"] for item in receiver.verified())

        assert types(family) == ["agent.created", "agent.updated"]
        assert types(credentials) == ["credential.created"]
        assert types(exact) == ["agent.created"]
        assert inactive.received == []
        assert other_org.received == []

    async def test_a_platform_event_makes_no_deliveries(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver, runtime: Runtime
    ) -> None:
        await acme_subscribed(client, events, receiver)
        response = await client.post("/v1/admin/signing-keys/rotate", json={}, headers=ADMIN)
        assert response.status_code == 200, response.text

        await deliver(events)

        published = await count(
            runtime,
            OutboxEvent,
            OutboxEvent.org_id.is_(None),
            OutboxEvent.published_at.is_not(None),
        )
        assert published >= 1
        assert await count(runtime, WebhookDelivery) == 0
        assert receiver.received == []


class TestRetries:
    async def test_a_failed_attempt_is_retried_after_the_backoff(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver, clock: FrozenClock
    ) -> None:
        subscription = await acme_subscribed(client, events, receiver)
        receiver.answer(500)
        await create_agent(client)

        await deliver(events)

        failed = await the_delivery(client, subscription)
        assert (failed["status"], failed["attempts"]) == ("pending", 1)
        due = seconds_until(clock, failed["next_attempt_at"])
        assert RETRY_DELAYS[0] * (1 - JITTER) <= due <= RETRY_DELAYS[0] * (1 + JITTER)
        assert await send_after(events, clock, due - 1) == 0
        assert len(receiver.received) == 1

        assert await send_after(events, clock, 2) == 1

        delivered = await the_delivery(client, subscription)
        assert (delivered["status"], delivered["attempts"]) == ("succeeded", 2)
        first, second = receiver.received
        assert first.id == second.id == delivered["event_id"]
        assert first.verified_by == second.verified_by == [subscription["secret"]]
        assert int(second.headers["webhook-timestamp"]) - int(
            first.headers["webhook-timestamp"]
        ) == pytest.approx(due + 1, abs=1)
        assert [
            (a["number"], a["status_code"], a["response_body"]) for a in delivered["attempt_log"]
        ] == [(1, 500, "answer 500"), (2, 204, "")]

    @pytest.mark.parametrize("overrides", [{"webhook_timeout_seconds": 0.5}])
    async def test_a_receiver_slower_than_the_timeout_is_retried(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver, clock: FrozenClock
    ) -> None:
        subscription = await acme_subscribed(client, events, receiver)
        receiver.answer(204, delay_seconds=2)
        await create_agent(client)

        started = time.monotonic()
        await deliver(events)

        assert time.monotonic() - started < 1.8
        delivery = await the_delivery(client, subscription)
        assert (delivery["status"], delivery["attempts"]) == ("pending", 1)
        assert seconds_until(clock, delivery["next_attempt_at"]) > 0
        [attempt] = delivery["attempt_log"]
        assert (attempt["status_code"], attempt["error"]) == (None, "timed out")
        assert 500 <= attempt["duration_ms"] < 1800


class TestDeadLetters:
    async def test_ten_failures_make_a_dead_letter_that_a_replay_delivers(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver, clock: FrozenClock
    ) -> None:
        subscription = await acme_subscribed(client, events, receiver)
        receiver.answer(*[500] * 10)
        before = dead_letters("agent.created")
        await create_agent(client)
        await deliver(events)
        waited = 0.0

        for attempts, delay in enumerate(RETRY_DELAYS, start=1):
            delivery = await the_delivery(client, subscription)
            assert (delivery["status"], delivery["attempts"]) == ("pending", attempts)
            due = seconds_until(clock, delivery["next_attempt_at"])
            assert delay * (1 - JITTER) <= due <= delay * (1 + JITTER), (attempts, due)
            assert await send_after(events, clock, due + 1) == 1
            waited += due + 1

        dead = await the_delivery(client, subscription)
        assert (dead["status"], dead["attempts"]) == ("dead", 10)
        assert datetime.fromisoformat(dead["dead_at"]) == clock.now()
        assert dead["next_attempt_at"] is None
        assert [a["status_code"] for a in dead["attempt_log"]] == [500] * 10
        assert 0.8 * sum(RETRY_DELAYS) <= waited <= 1.2 * sum(RETRY_DELAYS) + 10
        assert dead_letters("agent.created") == before + 1
        assert len(receiver.received) == 10
        assert {item.id for item in receiver.verified()} == {dead["event_id"]}
        # Only the delivery died: the subscription is not paused below its own threshold.
        state = await read_subscription(client, subscription)
        assert (state["active"], state["paused_at"], state["consecutive_failures"]) == (
            True,
            None,
            10,
        )
        assert await send_after(events, clock, 86400) == 0
        assert [d["id"] for d in (await listed(client, subscription, status="dead"))["items"]] == [
            dead["id"]
        ]

        replayed = await client.post(
            webhook_url(subscription, f"/deliveries/{dead['id']}/replay"), headers=ADMIN
        )
        assert replayed.status_code == 200, replayed.text
        assert replayed.json() == {"replayed": 1}
        assert await send_after(events, clock, 0) == 1

        delivered = await the_delivery(client, subscription)
        assert (delivered["status"], delivered["attempts"]) == ("succeeded", 1)
        assert delivered["dead_at"] is None
        assert delivered["attempt_log"][-1]["status_code"] == 204
        assert len(receiver.received) == 11
        assert receiver.received[-1].id == dead["event_id"]
        assert dead_letters("agent.created") == before + 1

    async def test_only_a_dead_delivery_can_be_replayed(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver
    ) -> None:
        subscription = await acme_subscribed(client, events, receiver)
        await create_agent(client)
        await deliver(events)
        delivery = await the_delivery(client, subscription)

        response = await client.post(
            webhook_url(subscription, f"/deliveries/{delivery['id']}/replay"), headers=ADMIN
        )

        assert response.status_code == 409, response.text
        assert response.json()["code"] == "WEBHOOK_DELIVERY_NOT_REPLAYABLE"
        assert (await the_delivery(client, subscription))["status"] == "succeeded"
        assert len(receiver.received) == 1

    @pytest.mark.parametrize("overrides", [{"webhook_max_attempts": 1}])
    async def test_replaying_a_subscription_sends_all_its_dead_letters_again(
        self,
        client: httpx.AsyncClient,
        events: Events,
        receiver: Receiver,
        receivers: Callable[[], Receiver],
        clock: FrozenClock,
    ) -> None:
        subscription = await acme_subscribed(client, events, receiver)
        bystander = receivers()
        other = await subscribe(client, bystander)
        receiver.answer(500, 500, 500)
        bystander.answer(500, 500, 500)
        for name in ("bot-a", "bot-b", "bot-c"):
            await create_agent(client, name=name)
        await deliver(events)
        assert len((await listed(client, subscription, status="dead"))["items"]) == 3

        response = await client.post(webhook_url(subscription, "/replay"), headers=ADMIN)

        assert response.status_code == 200, response.text
        assert response.json() == {"replayed": 3}
        assert await send_all(events) == 3
        statuses = [d["status"] for d in (await listed(client, subscription))["items"]]
        assert statuses == ["succeeded"] * 3
        assert len(set(receiver.ids())) == 3
        assert len(receiver.received) == 6
        # Another subscription's dead letters stay dead.
        assert len((await listed(client, other, status="dead"))["items"]) == 3
        assert len(bystander.received) == 3
        [audited] = await audit_of(client, "webhook.replayed")
        assert audited["target"] == subscription["id"]
        assert audited["details"] == {
            "subscription_id": subscription["id"],
            "delivery_id": None,
            "replayed": 3,
        }


class TestPausing:
    @pytest.mark.parametrize("overrides", [{"webhook_pause_after_failures": 3}])
    async def test_three_failures_in_a_row_pause_the_subscription_until_resumed(
        self,
        client: httpx.AsyncClient,
        events: Events,
        receiver: Receiver,
        receivers: Callable[[], Receiver],
        runtime: Runtime,
        clock: FrozenClock,
    ) -> None:
        subscription = await acme_subscribed(client, events, receiver, event_types=["agent.*"])
        watcher = receivers()
        await subscribe(client, watcher, event_types=["webhook.paused"])
        receiver.answer(500, 500, 500)
        await create_agent(client)
        await deliver(events)
        assert await send_after(events, clock, RETRY_DELAYS[0] * (1 + JITTER) + 1) == 1
        assert (await read_subscription(client, subscription))["active"] is True

        assert await send_after(events, clock, RETRY_DELAYS[1] * (1 + JITTER) + 1) == 1

        paused = await read_subscription(client, subscription)
        assert (paused["active"], paused["consecutive_failures"]) == (False, 3)
        assert datetime.fromisoformat(paused["paused_at"]) == clock.now()
        async with runtime.database.read_only() as session:
            [event] = (
                await session.execute(
                    select(OutboxEvent).where(OutboxEvent.type == "webhook.paused")
                )
            ).scalars()
        assert (event.org_id, event.subject) == ("acme", subscription["id"])
        assert event.data["subscription_id"] == subscription["id"]
        assert event.data["consecutive_failures"] == 3
        [audited] = await audit_of(client, "webhook.paused")
        assert audited["details"]["subscription_id"] == subscription["id"]
        assert audited["details"]["consecutive_failures"] == 3
        # Paused: its pending delivery waits, however long.
        assert await send_after(events, clock, 3600) == 0
        assert len(receiver.received) == 3

        await deliver(events)
        response = await client.get(
            "/v1/events",
            params={"org": "acme", "type": "webhook.paused", "last": 5, "follow": "false"},
            headers=ADMIN,
        )
        assert response.status_code == 200, response.text
        [streamed] = [
            json.loads(line.removeprefix("data:"))
            for line in response.text.splitlines()
            if line.startswith("data:")
        ]
        assert (streamed["id"], streamed["type"]) == (event.id, "webhook.paused")
        assert streamed["data"]["subscription_id"] == subscription["id"]
        # ...and other subscriptions of the org that want it are told.
        [told] = watcher.verified()
        assert (told.id, told.event["type"]) == (event.id, "webhook.paused")

        resumed = await client.patch(
            webhook_url(subscription), json={"active": True}, headers=ADMIN
        )
        assert resumed.status_code == 200, resumed.text
        assert (resumed.json()["active"], resumed.json()["paused_at"]) == (True, None)
        assert resumed.json()["consecutive_failures"] == 0
        assert await send_after(events, clock, 0) == 1
        delivery = await the_delivery(client, subscription)
        assert (delivery["status"], delivery["attempts"]) == ("succeeded", 4)
        assert len(receiver.received) == 4

    @pytest.mark.parametrize("overrides", [{"webhook_pause_after_failures": 3}])
    async def test_a_success_in_between_starts_the_count_again(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver, clock: FrozenClock
    ) -> None:
        subscription = await acme_subscribed(client, events, receiver)
        receiver.answer(500, 500, 204, 500, 500)
        await create_agent(client, name="bot-a")
        await deliver(events)
        await send_after(events, clock, RETRY_DELAYS[0] * (1 + JITTER) + 1)
        assert (await read_subscription(client, subscription))["consecutive_failures"] == 2
        await send_after(events, clock, RETRY_DELAYS[1] * (1 + JITTER) + 1)
        assert (await read_subscription(client, subscription))["consecutive_failures"] == 0

        await create_agent(client, name="bot-b")
        await deliver(events)
        await send_after(events, clock, RETRY_DELAYS[0] * (1 + JITTER) + 1)

        state = await read_subscription(client, subscription)
        assert (state["active"], state["paused_at"], state["consecutive_failures"]) == (
            True,
            None,
            2,
        )
        assert len(receiver.received) == 5

    @pytest.mark.parametrize("overrides", [{"webhook_pause_after_failures": 3}])
    async def test_failures_of_concurrent_deliveries_all_count(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver, runtime: Runtime
    ) -> None:
        subscription = await acme_subscribed(client, events, receiver)
        receiver.answer(500, 500, 500)
        for name in ("bot-a", "bot-b", "bot-c"):
            await create_agent(client, name=name)

        await deliver(events)

        assert len(receiver.received) == 3
        state = await read_subscription(client, subscription)
        assert (state["active"], state["consecutive_failures"]) == (False, 3)
        assert await count(runtime, OutboxEvent, OutboxEvent.type == "webhook.paused") == 1


class TestConcurrency:
    @pytest.mark.parametrize("overrides", [{"webhook_concurrency_per_subscription": 2}])
    async def test_a_slow_receiver_holds_only_its_own_slots(
        self,
        client: httpx.AsyncClient,
        events: Events,
        receiver: Receiver,
        receivers: Callable[[], Receiver],
        runtime: Runtime,
    ) -> None:
        await quiet_org(client, events)
        slow = receivers()
        slow.answer(delay_seconds=3)
        slow_subscription = await subscribe(client, slow)
        healthy = await subscribe(client, receiver)
        for number in range(10):
            await create_agent(client, name=f"bot-{number}")

        started = time.monotonic()
        await events.relay()
        while await succeeded(runtime, healthy) < 10:
            assert time.monotonic() - started < 5, "the healthy receiver was held up"
            await events.send_due()
            await asyncio.sleep(0.02)
        healthy_done = time.monotonic() - started

        assert healthy_done < 1.5
        assert len(receiver.verified()) == 10
        assert len((await listed(client, slow_subscription, status="pending"))["items"]) == 10
        assert len(slow.received) == 2  # its two slots are busy; the rest wait their turn
        while len(slow.received) < 3:
            assert time.monotonic() - started < 10, "the slow receiver's backlog never moved"
            await events.send_due()
            await asyncio.sleep(0.02)
        arrivals = [item.at for item in slow.received]
        assert arrivals[1] - arrivals[0] < 1
        assert arrivals[2] - arrivals[0] >= 3  # only after one of the first two was answered
        assert await succeeded(runtime, slow_subscription) >= 1


class TestTestEvent:
    async def test_a_test_event_goes_to_that_subscription_only(
        self,
        client: httpx.AsyncClient,
        events: Events,
        receiver: Receiver,
        receivers: Callable[[], Receiver],
        runtime: Runtime,
    ) -> None:
        subscription = await acme_subscribed(client, events, receiver)
        bystander = receivers()
        await subscribe(client, bystander)

        response = await client.post(webhook_url(subscription, "/test"), headers=ADMIN)
        await events.sender.drain()

        assert response.status_code == 202, response.text
        queued = response.json()
        assert (queued["event_type"], queued["subscription_id"]) == (
            "webhook.test",
            subscription["id"],
        )
        [received] = receiver.verified()
        assert received.id == queued["event_id"]
        assert received.event["type"] == "webhook.test"
        assert received.event["org"] == "acme"
        assert received.event["data"] == {"subscription_id": subscription["id"]}
        assert bystander.received == []
        assert (await the_delivery(client, subscription))["status"] == "succeeded"
        assert await count(runtime, OutboxEvent, OutboxEvent.type == "webhook.test") == 0


class TestLeases:
    async def test_two_senders_on_one_database_send_each_delivery_once(
        self,
        client: httpx.AsyncClient,
        events: Events,
        second_sender: Events,
        receiver: Receiver,
        runtime: Runtime,
        clock: FrozenClock,
    ) -> None:
        await acme_subscribed(client, events, receiver)
        async with runtime.database.unit_of_work() as session:
            event_ids = [
                await outbox.emit(
                    session,
                    clock,
                    type="agent.updated",
                    org_id="acme",
                    subject=f"agent-{number}",
                    data={"agent_id": f"agent-{number}", "agent_name": "bot", "fields": []},
                )
                for number in range(20)
            ]
        assert await relay.relay_once(runtime.database, runtime.bus, clock) == 20

        started = [0, 0]
        deadline = time.monotonic() + 10
        while len(receiver.received) < 20 and time.monotonic() < deadline:
            rounds = await asyncio.gather(events.send_due(), second_sender.send_due())
            started = [total + more for total, more in zip(started, rounds, strict=True)]
            await asyncio.sleep(0.01)
        await asyncio.gather(events.sender.drain(), second_sender.sender.drain())

        assert sum(started) == 20
        assert min(started) > 0  # both sent: each holds at most 4 of the subscription's slots
        assert await events.send_due() == await second_sender.send_due() == 0
        assert sorted(receiver.ids()) == sorted(event_ids)
        assert len(receiver.received) == 20
        assert await count(runtime, WebhookDelivery, WebhookDelivery.status == "succeeded") == 20


class TestRetention:
    @pytest.mark.parametrize("overrides", [{"webhook_max_attempts": 1}])
    async def test_finished_deliveries_and_published_events_are_forgotten(
        self,
        client: httpx.AsyncClient,
        events: Events,
        receivers: Callable[[], Receiver],
        runtime: Runtime,
        clock: FrozenClock,
        settings: Settings,
    ) -> None:
        await quiet_org(client, events)
        healthy, failing, waiting = receivers(), receivers(), receivers()
        failing.answer(500)
        await subscribe(client, healthy)
        await subscribe(client, failing)
        paused = await subscribe(client, waiting)
        await create_agent(client, name="bot-a")
        assert await relay.relay_once(runtime.database, runtime.bus, clock) == 1
        response = await client.patch(webhook_url(paused), json={"active": False}, headers=ADMIN)
        assert response.status_code == 200, response.text
        await events.send_due()
        await events.sender.drain()
        await create_agent(client, name="bot-b")  # never relayed
        statuses = {
            d: await count(runtime, WebhookDelivery, WebhookDelivery.status == d)
            for d in ("succeeded", "dead", "pending")
        }
        assert statuses == {"succeeded": 1, "dead": 1, "pending": 1}
        assert await count(runtime, WebhookAttempt) == 2
        retention = settings.event_retention_days * 86400

        clock.advance(retention - 60)
        assert await events.sweep() == 0

        clock.advance(120)
        assert await events.sweep() == 4  # two deliveries, org.created and bot-a's event

        async with runtime.database.read_only() as session:
            left = list((await session.execute(select(WebhookDelivery))).scalars())
            kept = list((await session.execute(select(OutboxEvent))).scalars())
        assert [(d.subscription_id, d.status) for d in left] == [(paused["id"], "pending")]
        assert await count(runtime, WebhookAttempt) == 0
        assert [(e.type, e.published_at, e.data["agent_name"]) for e in kept] == [
            ("agent.created", None, "bot-b")
        ]
