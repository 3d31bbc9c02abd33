"""Webhook secrets: rotation keeps the old secret signing for a grace period; signatures are
checked with the Standard Webhooks reference library."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tabard.core.clock import FrozenClock
from tabard.events.service import Events
from tests.conftest import ADMIN, create_org
from tests.events.conftest import deliver, org_with_webhook
from tests.events.subscription_support import (
    RETRY_DUE,
    SIGNATURE,
    WEBHOOKS,
    audit_events,
    created,
    delivered,
    key_of,
    rotate,
    rotated,
    signatures,
)
from tests.support.webhook_receiver import Receiver


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
