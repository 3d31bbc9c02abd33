"""The outbox relay: committed outbox rows onto the bus's stream in order, numbered gaplessly, and
fanned out into webhook deliveries exactly once, whatever crashes or races in between."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from sqlalchemy import func, select

from tabard.api.app import build_runtime
from tabard.core import outbox
from tabard.core.bus import EventBus, StreamMessage
from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tabard.core.outbox import OutboxEvent
from tabard.core.runtime import Runtime
from tabard.events import relay
from tabard.events.models import WebhookDelivery
from tabard.events.service import Events
from tests.conftest import create_org
from tests.events.conftest import deliver, subscribe
from tests.support.webhook_receiver import Receiver


@pytest.fixture
def receivers() -> Iterator[Callable[[], Receiver]]:
    started: list[Receiver] = []

    def start() -> Receiver:
        started.append(Receiver())
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture
async def replica(
    settings: Settings, clock: FrozenClock, runtime: Runtime
) -> AsyncIterator[Runtime]:
    """Another process on the same database: its own engine, bus and commit listeners."""
    other = build_runtime(settings, clock=clock, kv=runtime.kv)
    yield other
    await other.bus.close()
    await other.database.close()


async def emit(
    runtime: Runtime, count: int, org_id: str | None = "acme", type: str = "agent.updated"
) -> list[str]:
    """`count` events committed in one transaction, as a domain service writes them."""
    async with runtime.database.unit_of_work() as session:
        return [
            await outbox.emit(
                session,
                runtime.clock,
                type=type,
                org_id=org_id,
                subject=f"agent-{number}",
                data={"agent_id": f"agent-{number}", "agent_name": "bot", "fields": []},
            )
            for number in range(count)
        ]


async def emit_then_fail(runtime: Runtime) -> None:
    async with runtime.database.unit_of_work() as session:
        await outbox.emit(
            session, runtime.clock, type="org.updated", org_id="acme", subject="acme", data={}
        )
        raise RuntimeError("changed my mind")


async def outbox_rows(runtime: Runtime) -> list[OutboxEvent]:
    async with runtime.database.read_only() as session:
        statement = select(OutboxEvent).order_by(OutboxEvent.sequence)
        return list((await session.execute(statement)).scalars())


async def stream(bus: EventBus, durable: str = "relay-test") -> list[StreamMessage]:
    """Everything on the stream, read through a new durable consumer."""
    messages: list[StreamMessage] = []
    async with bus.consume(durable, "tabard.>") as consumer:
        iterator = aiter(consumer)
        with contextlib.suppress(TimeoutError):
            while True:
                messages.append(await asyncio.wait_for(anext(iterator), timeout=0.3))
    return messages


async def deliveries_per_pair(runtime: Runtime) -> list[int]:
    """How many deliveries each (subscription, event) has."""
    async with runtime.database.read_only() as session:
        statement = select(func.count()).group_by(
            WebhookDelivery.subscription_id, WebhookDelivery.event_id
        )
        return list((await session.execute(statement.select_from(WebhookDelivery))).scalars())


async def acme(client: httpx.AsyncClient, events: Events) -> None:
    """The org, with its own `org.created` relayed already."""
    await create_org(client, "acme")
    await deliver(events)


async def send_everything(events: Events) -> None:
    """Send every due delivery, round after round (each round fills a subscription's slots)."""
    while await events.send_due():
        await events.sender.drain()


async def relay_all(runtime: Runtime, batch: int = relay.BATCH) -> list[int]:
    """Run the relay round after round until it finds nothing; what each round published."""
    rounds = []
    while published := await relay.relay_once(
        runtime.database, runtime.bus, runtime.clock, batch=batch
    ):
        rounds.append(published)
    return rounds


class TestRelayOnce:
    async def test_committed_rows_go_onto_the_stream_in_order_and_are_numbered(
        self, runtime: Runtime
    ) -> None:
        org_events = await emit(runtime, 3)
        [platform_event] = await emit(runtime, 1, org_id=None, type="signing_key.rotated")
        more = await emit(runtime, 2, org_id="globex", type="agent.created")
        committed = [*org_events, platform_event, *more]

        assert await relay.relay_once(runtime.database, runtime.bus, runtime.clock) == 6

        messages = await stream(runtime.bus)
        assert [message.msg_id for message in messages] == committed
        assert [message.subject for message in messages] == [
            *["tabard.acme.agent.updated"] * 3,
            "tabard._platform.signing_key.rotated",
            *["tabard.globex.agent.created"] * 2,
        ]
        rows = await outbox_rows(runtime)
        assert [row.id for row in rows] == committed
        assert [row.published_seq for row in rows] == [1, 2, 3, 4, 5, 6]
        assert all(row.published_at == runtime.clock.now() for row in rows)
        first = json.loads(messages[0].payload)
        assert first == {
            "id": rows[0].id,
            "type": "agent.updated",
            "org": "acme",
            "time": rows[0].occurred_at.isoformat().replace("+00:00", "Z"),
            "subject": "agent-0",
            "data": {"agent_id": "agent-0", "agent_name": "bot", "fields": []},
        }
        assert json.loads(messages[3].payload)["org"] is None

    async def test_nothing_pending_publishes_nothing(self, runtime: Runtime) -> None:
        await emit(runtime, 2)
        await relay_all(runtime)

        assert await relay.relay_once(runtime.database, runtime.bus, runtime.clock) == 0
        assert len(await stream(runtime.bus)) == 2
        assert [row.published_seq for row in await outbox_rows(runtime)] == [1, 2]

    async def test_numbering_goes_on_from_the_last_round(self, runtime: Runtime) -> None:
        await emit(runtime, 2)
        await relay_all(runtime)
        await emit(runtime, 3)

        assert await relay_all(runtime) == [3]

        assert [row.published_seq for row in await outbox_rows(runtime)] == [1, 2, 3, 4, 5]

    async def test_a_batch_too_big_for_one_round_goes_in_order_over_several(
        self, runtime: Runtime
    ) -> None:
        committed = await emit(runtime, 7)

        assert await relay_all(runtime, batch=3) == [3, 3, 1]

        assert [message.msg_id for message in await stream(runtime.bus)] == committed
        assert [row.published_seq for row in await outbox_rows(runtime)] == list(range(1, 8))

    async def test_events_relay_catches_up_past_one_batch(
        self, runtime: Runtime, events: Events
    ) -> None:
        committed = await emit(runtime, relay.BATCH + 5)

        assert await events.relay() == relay.BATCH + 5

        rows = await outbox_rows(runtime)
        assert [row.published_seq for row in rows] == list(range(1, relay.BATCH + 6))
        assert [message.msg_id for message in await stream(runtime.bus)] == committed

    async def test_rows_of_a_rolled_back_transaction_never_appear(self, runtime: Runtime) -> None:
        with pytest.raises(RuntimeError, match="changed my mind"):
            await emit_then_fail(runtime)
        [kept] = await emit(runtime, 1)

        assert await relay_all(runtime) == [1]

        assert [row.id for row in await outbox_rows(runtime)] == [kept]
        assert [message.msg_id for message in await stream(runtime.bus)] == [kept]


class TestCrashBetweenPublishAndMark:
    async def test_publishing_again_keeps_one_copy_and_delivers_once(
        self,
        client: httpx.AsyncClient,
        events: Events,
        runtime: Runtime,
        receivers: Callable[[], Receiver],
    ) -> None:
        await acme(client, events)
        first, second = receivers(), receivers()
        await subscribe(client, first)
        await subscribe(client, second)
        committed = await emit(runtime, 4)
        async with runtime.database.read_only() as session:
            rows = await relay.pending(session)
        await relay.publish(runtime.bus, rows)  # and then the relay died

        await deliver(events)  # the next relay starts over
        await send_everything(events)
        await first.wait_for(4)
        await second.wait_for(4)

        messages = [m for m in await stream(runtime.bus) if m.msg_id in committed]
        assert [message.msg_id for message in messages] == committed
        assert sorted(first.ids()) == sorted(committed)
        assert sorted(second.ids()) == sorted(committed)
        assert len(first.received) == len(second.received) == 4
        assert await deliveries_per_pair(runtime) == [1] * 8
        assert [row.published_seq for row in await outbox_rows(runtime)] == [1, 2, 3, 4, 5]


class TestRacingRelays:
    async def test_marking_the_same_events_twice_numbers_and_fans_them_out_once(
        self,
        client: httpx.AsyncClient,
        events: Events,
        runtime: Runtime,
        receivers: Callable[[], Receiver],
    ) -> None:
        await acme(client, events)
        await subscribe(client, receivers())
        committed = await emit(runtime, 3)

        first = await relay.mark_published(runtime.database, runtime.clock, committed)
        second = await relay.mark_published(runtime.database, runtime.clock, committed)

        assert first == second == 4
        assert [row.published_seq for row in await outbox_rows(runtime)] == [1, 2, 3, 4]
        assert await deliveries_per_pair(runtime) == [1] * 3

    async def test_two_relays_on_one_database_number_each_event_once(
        self,
        client: httpx.AsyncClient,
        events: Events,
        runtime: Runtime,
        replica: Runtime,
        receivers: Callable[[], Receiver],
    ) -> None:
        await acme(client, events)
        receiver = receivers()
        await subscribe(client, receiver)
        await subscribe(client, receivers())
        committed = await emit(runtime, 20)

        async def relay_from(side: Runtime) -> None:
            while await relay.relay_once(side.database, side.bus, side.clock, batch=4):
                pass

        await asyncio.gather(relay_from(runtime), relay_from(replica))
        await send_everything(events)
        await receiver.wait_for(20)

        rows = await outbox_rows(runtime)
        assert all(row.published_at is not None for row in rows)
        assert sorted(row.published_seq or 0 for row in rows) == list(range(1, 22))
        assert await deliveries_per_pair(runtime) == [1] * 40
        assert sorted(receiver.ids()) == sorted(committed)
        assert len(receiver.received) == 20


class TestWakeUp:
    @pytest.mark.parametrize("overrides", [{"outbox_relay_interval_seconds": 30}])
    async def test_a_local_commit_with_events_wakes_the_relay_at_once(
        self, events: Events, runtime: Runtime, replica: Runtime
    ) -> None:
        [first] = await emit(runtime, 1)
        task = asyncio.create_task(events.relay_forever())
        try:
            await published(runtime, first, within=2)
            await asyncio.sleep(0.3)  # the round the first commit's wake-up asked for is over
            # Committed through another process's database: no listener here hears of it, so
            # it waits for the relay's next look, 30 s away...
            [elsewhere] = await emit(replica, 1)
            await asyncio.sleep(0.7)
            # ...and so does a local commit that wrote no events...
            async with runtime.database.unit_of_work() as session:
                await session.execute(select(1))
            await asyncio.sleep(0.7)
            assert not await is_published(runtime, elsewhere)

            started = time.monotonic()
            [local] = await emit(runtime, 1)  # ...until a local commit with events
            await published(runtime, local, within=2)

            assert time.monotonic() - started < 2
            assert await is_published(runtime, elsewhere)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def is_published(runtime: Runtime, event_id: str) -> bool:
    async with runtime.database.read_only() as session:
        statement = select(OutboxEvent.published_seq).where(OutboxEvent.id == event_id)
        return (await session.execute(statement)).scalar_one() is not None


async def published(runtime: Runtime, event_id: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not await is_published(runtime, event_id):
        assert time.monotonic() < deadline, f"{event_id} was not relayed within {within} s"
        await asyncio.sleep(0.02)
