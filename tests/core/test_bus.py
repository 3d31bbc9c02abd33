"""One conformance suite for every `EventBus` backend.

The memory bus runs on a FrozenClock, so ack waits and nak delays pass by moving the clock; NATS
times them on the server, so its cases use a short real ack wait and sleep past it. Each test gets
its own stream and subject prefix; the NATS stream is deleted afterwards.

"No delivery" is asserted without sleeping: a matching sentinel is published last, and whatever
arrives before it (messages from one publisher arrive in order) must be exactly what was expected.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from tabard.core.bus import EventBus, Message, StreamMessage, create_bus, subject_matches
from tabard.core.bus.memory import MemoryEventBus
from tabard.core.bus.nats import NatsEventBus
from tabard.core.clock import FrozenClock

TIMEOUT = 15


@dataclass
class Backend:
    """A bus under test and what its cases need to know about it.

    `prefix` is the stream's subject prefix, `ack_wait` the short ack wait of redelivery cases,
    `elapse` lets that much time pass for the backend, and `peer()` opens another replica: a
    second bus on the same server and stream.
    """

    bus: EventBus
    prefix: str
    ack_wait: float
    elapse: Callable[[float], Awaitable[None]]
    make_peer: Callable[[], EventBus]
    peers: list[EventBus] = field(default_factory=list)

    def peer(self) -> EventBus:
        bus = self.make_peer()
        self.peers.append(bus)
        return bus

    async def close(self) -> None:
        for bus in [self.bus, *self.peers]:
            await bus.close()


@asynccontextmanager
async def _memory_backend(prefix: str) -> AsyncIterator[Backend]:
    clock = FrozenClock()

    async def elapse(seconds: float) -> None:
        clock.advance(seconds)

    bus = create_bus("memory", "", clock, subjects_prefix=prefix)
    assert isinstance(bus, MemoryEventBus)
    backend = Backend(bus, prefix, 30.0, elapse, lambda: MemoryEventBus(bus.broker))
    try:
        yield backend
    finally:
        await backend.close()


@asynccontextmanager
async def _nats_backend(url: str, prefix: str) -> AsyncIterator[Backend]:
    stream = f"TEST_{uuid.uuid4().hex}"

    def make_bus() -> EventBus:
        return create_bus("nats", url, FrozenClock(), stream=stream, subjects_prefix=prefix)

    backend = Backend(make_bus(), prefix, 0.5, asyncio.sleep, make_bus)
    try:
        yield backend
    finally:
        await backend.close()
        await _delete_stream(url, stream)


async def _delete_stream(url: str, stream: str) -> None:
    client = Client()
    await client.connect(servers=[url], allow_reconnect=False)
    try:
        # Missing when the test never connected (it only checked arguments).
        with contextlib.suppress(NotFoundError):
            await client.jetstream().delete_stream(stream)
    finally:
        await client.close()


@pytest.fixture(params=["memory", pytest.param("nats", marks=pytest.mark.nats)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    prefix = f"t{uuid.uuid4().hex}"
    if request.param == "memory":
        context = _memory_backend(prefix)
    else:
        context = _nats_backend(request.getfixturevalue("nats_url"), prefix)
    async with context as ready:
        yield ready


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:12]}"


async def collect_until(messages: AsyncIterator[Message], last_subject: str) -> list[str]:
    """Subjects received up to and including the sentinel `last_subject`."""
    subjects = []
    async for message in messages:
        subjects.append(message.subject)
        if message.subject == last_subject:
            return subjects
    raise AssertionError("subscription ended before the sentinel arrived")


# Pub/sub


async def test_publish_reaches_wildcard_subscribers_only_on_matching_subjects(
    backend: Backend,
) -> None:
    topic = unique("ps")
    async with (
        asyncio.timeout(TIMEOUT),
        backend.bus.subscribe(f"{topic}.ev.*") as one_token,
        backend.bus.subscribe(f"{topic}.ev.>") as rest,
        backend.bus.subscribe(f"{topic}.*.a") as middle,
    ):
        for subject in ("ev.a", "ev.a.b", "other.b", "ev", "ev.end"):
            await backend.bus.publish(f"{topic}.{subject}", subject.encode())
        await backend.bus.publish(f"{topic}.end.a", b"sentinel")

        assert await collect_until(one_token, f"{topic}.ev.end") == [
            f"{topic}.ev.a",
            f"{topic}.ev.end",
        ]
        assert await collect_until(rest, f"{topic}.ev.end") == [
            f"{topic}.ev.a",
            f"{topic}.ev.a.b",
            f"{topic}.ev.end",
        ]
        assert await collect_until(middle, f"{topic}.end.a") == [
            f"{topic}.ev.a",
            f"{topic}.end.a",
        ]


async def test_subscriber_receives_the_payload(backend: Backend) -> None:
    subject = f"{unique('ps')}.hello"
    async with asyncio.timeout(TIMEOUT), backend.bus.subscribe(subject) as messages:
        await backend.bus.publish(subject, b"\x00payload\xff")
        assert await anext(messages) == Message(subject, b"\x00payload\xff")


async def test_publish_without_subscribers_is_dropped(backend: Backend) -> None:
    topic = unique("ps")
    async with asyncio.timeout(TIMEOUT):
        await backend.bus.publish(f"{topic}.early", b"nobody listens")
        async with backend.bus.subscribe(f"{topic}.>") as messages:
            await backend.bus.publish(f"{topic}.late", b"heard")
            assert (await anext(messages)).subject == f"{topic}.late"


async def test_subscribers_in_another_replica_receive_messages(backend: Backend) -> None:
    topic = unique("ps")
    peer = backend.peer()
    async with asyncio.timeout(TIMEOUT), peer.subscribe(f"{topic}.*") as messages:
        await backend.bus.publish(f"{topic}.across", b"from replica one")
        assert await anext(messages) == Message(f"{topic}.across", b"from replica one")


async def test_closing_the_bus_ends_open_subscriptions(backend: Backend) -> None:
    async with asyncio.timeout(TIMEOUT), backend.bus.subscribe(f"{unique('ps')}.>") as messages:
        await backend.bus.close()
        assert [message async for message in messages] == []
    with pytest.raises(RuntimeError, match="closed"):
        await backend.bus.publish("anything", b"")


@pytest.mark.parametrize("subject", ["", "a..b", "a.*", "a.>", "a b", "a.b*"])
async def test_publish_rejects_malformed_subjects(backend: Backend, subject: str) -> None:
    with pytest.raises(ValueError, match="subject"):
        await backend.bus.publish(subject, b"")


@pytest.mark.parametrize("pattern", ["", "a.>.b", "a..b", "a.b*"])
async def test_subscribe_rejects_malformed_patterns(backend: Backend, pattern: str) -> None:
    with pytest.raises(ValueError, match="subject"):
        async with backend.bus.subscribe(pattern):
            pass


# Durable stream


async def next_stream(messages: AsyncIterator[StreamMessage]) -> StreamMessage:
    return await anext(messages)


async def test_stream_publish_then_consume_then_ack(backend: Backend) -> None:
    bus, prefix = backend.bus, backend.prefix
    async with asyncio.timeout(TIMEOUT):
        first = await bus.stream_publish(f"{prefix}.orders.created", b"one", msg_id="m-1")
        second = await bus.stream_publish(f"{prefix}.orders.paid", b"two")
        assert second > first
        async with bus.consume("orders", f"{prefix}.orders.>") as messages:
            one = await next_stream(messages)
            assert (one.subject, one.payload, one.seq) == (
                f"{prefix}.orders.created",
                b"one",
                first,
            )
            assert (one.msg_id, one.deliveries) == ("m-1", 1)
            await one.ack()
            two = await next_stream(messages)
            assert (two.payload, two.seq, two.msg_id) == (b"two", second, None)
            await two.ack()


async def test_consumer_receives_only_subjects_matching_its_filter(backend: Backend) -> None:
    bus, prefix = backend.bus, backend.prefix
    async with asyncio.timeout(TIMEOUT):
        for subject in ("a.x", "b.x", "a.y.z", "a.y"):
            await bus.stream_publish(f"{prefix}.{subject}", subject.encode())
        async with bus.consume("only-a", f"{prefix}.a.*") as messages:
            received = [await next_stream(messages) for _ in range(2)]
    assert [m.payload for m in received] == [b"a.x", b"a.y"]


async def test_unacked_message_is_redelivered_after_ack_wait(backend: Backend) -> None:
    bus, prefix = backend.bus, backend.prefix
    async with asyncio.timeout(TIMEOUT):
        seq = await bus.stream_publish(f"{prefix}.jobs", b"work")
        async with bus.consume("workers", f"{prefix}.jobs", backend.ack_wait) as messages:
            first = await next_stream(messages)
            await backend.elapse(backend.ack_wait * 1.5)
            again = await next_stream(messages)
            assert (again.seq, again.payload, again.deliveries) == (seq, b"work", 2)
            await again.ack()
            await first.ack()  # already settled by the redelivery's ack: no effect, no error
            later = await bus.stream_publish(f"{prefix}.jobs", b"next")
            assert (await next_stream(messages)).seq == later


async def test_nak_redelivers_at_once(backend: Backend) -> None:
    bus, prefix = backend.bus, backend.prefix
    async with asyncio.timeout(TIMEOUT):
        seq = await bus.stream_publish(f"{prefix}.jobs", b"retry me")
        async with bus.consume("nakker", f"{prefix}.jobs", ack_wait_seconds=60) as messages:
            await (await next_stream(messages)).nak()
            again = await next_stream(messages)
            assert (again.seq, again.deliveries) == (seq, 2)
            await again.ack()


async def test_nak_with_delay_lets_later_messages_pass_first(backend: Backend) -> None:
    bus, prefix = backend.bus, backend.prefix
    async with asyncio.timeout(TIMEOUT):
        delayed = await bus.stream_publish(f"{prefix}.jobs", b"later")
        async with bus.consume("delayer", f"{prefix}.jobs", ack_wait_seconds=60) as messages:
            await (await next_stream(messages)).nak(delay_seconds=backend.ack_wait)
            following = await bus.stream_publish(f"{prefix}.jobs", b"now")
            now = await next_stream(messages)
            assert now.seq == following
            await now.ack()
            await backend.elapse(backend.ack_wait * 1.5)
            again = await next_stream(messages)
            assert (again.seq, again.deliveries) == (delayed, 2)
            await again.ack()


async def test_repeated_msg_id_is_stored_once(backend: Backend) -> None:
    bus, prefix = backend.bus, backend.prefix
    async with asyncio.timeout(TIMEOUT):
        original = await bus.stream_publish(f"{prefix}.events", b"first", msg_id="evt-1")
        duplicate = await bus.stream_publish(f"{prefix}.events", b"second", msg_id="evt-1")
        other = await bus.stream_publish(f"{prefix}.events", b"other", msg_id="evt-2")
        assert duplicate == original
        assert other == original + 1
        async with bus.consume("dedupe", f"{prefix}.events") as messages:
            received = [await next_stream(messages) for _ in range(2)]
    assert [(m.seq, m.payload, m.msg_id) for m in received] == [
        (original, b"first", "evt-1"),
        (other, b"other", "evt-2"),
    ]


async def test_durable_resumes_after_its_acked_messages(backend: Backend) -> None:
    bus, prefix = backend.bus, backend.prefix
    async with asyncio.timeout(TIMEOUT):
        seqs = [await bus.stream_publish(f"{prefix}.log", f"{i}".encode()) for i in range(3)]
        async with bus.consume("reader", f"{prefix}.log") as messages:
            for _ in range(2):
                await (await next_stream(messages)).ack()
        async with bus.consume("reader", f"{prefix}.log") as messages:
            assert (await next_stream(messages)).seq == seqs[2]
        async with bus.consume("another-reader", f"{prefix}.log") as messages:
            assert (await next_stream(messages)).seq == seqs[0]


async def test_unacked_message_goes_to_the_next_consumer_of_the_durable(backend: Backend) -> None:
    bus, prefix = backend.bus, backend.prefix
    async with asyncio.timeout(TIMEOUT):
        seq = await bus.stream_publish(f"{prefix}.jobs", b"crashy")
        async with bus.consume("handover", f"{prefix}.jobs", backend.ack_wait) as messages:
            assert (await next_stream(messages)).seq == seq  # then "crash" without acking
        await backend.elapse(backend.ack_wait * 1.5)
        async with backend.peer().consume("handover", f"{prefix}.jobs", backend.ack_wait) as again:
            message = await next_stream(again)
            assert (message.seq, message.deliveries) == (seq, 2)
            await message.ack()


async def test_replicas_share_the_stream_and_durables(backend: Backend) -> None:
    bus, prefix = backend.bus, backend.prefix
    peer = backend.peer()
    async with asyncio.timeout(TIMEOUT):
        first = await bus.stream_publish(f"{prefix}.shared", b"from one", msg_id="shared-1")
        assert await peer.stream_publish(f"{prefix}.shared", b"again", msg_id="shared-1") == first
        async with peer.consume("shared", f"{prefix}.shared") as messages:
            message = await next_stream(messages)
            assert (message.seq, message.payload) == (first, b"from one")
            await message.ack()
        sentinel = await peer.stream_publish(f"{prefix}.shared", b"sentinel")
        async with bus.consume("shared", f"{prefix}.shared") as messages:
            assert (await next_stream(messages)).seq == sentinel


async def test_consumers_of_one_durable_share_the_messages_without_duplicates(
    backend: Backend,
) -> None:
    bus, prefix = backend.bus, backend.prefix
    received: list[int] = []
    done = asyncio.Event()

    async def work(replica: EventBus, expected: int) -> None:
        async with replica.consume("pool", f"{prefix}.work") as messages:
            async for message in messages:
                await message.ack()
                received.append(message.seq)
                if len(received) == expected:
                    done.set()

    async with asyncio.timeout(TIMEOUT):
        published = [await bus.stream_publish(f"{prefix}.work", b"%d" % i) for i in range(10)]
        async with asyncio.TaskGroup() as group:
            workers = [group.create_task(work(r, 10)) for r in (bus, backend.peer())]
            await done.wait()
            for worker in workers:
                worker.cancel()
    assert sorted(received) == published


async def test_stream_and_pubsub_share_subjects(backend: Backend) -> None:
    bus, prefix = backend.bus, backend.prefix
    async with asyncio.timeout(TIMEOUT), bus.subscribe(f"{prefix}.mixed.>") as plain:
        seq = await bus.stream_publish(f"{prefix}.mixed.durable", b"stored")
        assert await anext(plain) == Message(f"{prefix}.mixed.durable", b"stored")
        await bus.publish(f"{prefix}.mixed.plain", b"also stored")
        async with bus.consume("mixed", f"{prefix}.mixed.>") as messages:
            assert (await next_stream(messages)).seq == seq
            also = await next_stream(messages)
            assert (also.seq, also.payload) == (seq + 1, b"also stored")


async def test_stream_publish_outside_the_prefix_is_rejected(backend: Backend) -> None:
    with pytest.raises(ValueError, match="outside the stream"):
        await backend.bus.stream_publish(f"not-{backend.prefix}.x", b"")


@pytest.mark.parametrize("durable", ["", "a.b", "a b", "a*", "a>"])
async def test_consume_rejects_malformed_durable_names(backend: Backend, durable: str) -> None:
    with pytest.raises(ValueError, match="durable"):
        async with backend.bus.consume(durable, f"{backend.prefix}.>"):
            pass


async def test_consume_rejects_a_non_positive_ack_wait(backend: Backend) -> None:
    with pytest.raises(ValueError, match="ack_wait_seconds"):
        async with backend.bus.consume("d", f"{backend.prefix}.>", ack_wait_seconds=0):
            pass


async def test_nak_rejects_a_negative_delay(backend: Backend) -> None:
    async with asyncio.timeout(TIMEOUT):
        await backend.bus.stream_publish(f"{backend.prefix}.x", b"")
        async with backend.bus.consume("neg", f"{backend.prefix}.>") as messages:
            message = await next_stream(messages)
            with pytest.raises(ValueError, match="delay_seconds"):
                await message.nak(-1)
            await message.ack()


async def test_ping_succeeds_and_fails_once_closed(backend: Backend) -> None:
    async with asyncio.timeout(TIMEOUT):
        await backend.bus.ping()
        await backend.bus.close()
        with pytest.raises(RuntimeError, match="closed"):
            await backend.bus.ping()
        await backend.bus.close()  # a second close is harmless


# Backend-independent


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.*", "a", False),
        ("*.b", "a.b", True),
        ("a.>", "a.b", True),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        (">", "a.b", True),
        ("a.*.c.>", "a.x.c.d.e", True),
        ("a.*.c.>", "a.x.d.d", False),
    ],
)
def test_subject_matches_follows_nats_wildcards(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown event bus backend"):
        create_bus("kafka", "", FrozenClock())


async def test_nats_ping_fails_within_the_connect_timeout_when_unreachable() -> None:
    bus = NatsEventBus("nats://127.0.0.1:1", stream="S", subjects_prefix="p", connect_timeout=0.5)
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(TimeoutError):
            await bus.ping()
        await bus.close()


async def _stream_max_age(url: str, stream: str) -> float | None:
    client = Client()
    await client.connect(servers=[url], allow_reconnect=False)
    try:
        info = await client.jetstream().stream_info(stream)
        max_age: float | None = info.config.max_age
        return max_age
    finally:
        await client.close()


async def _age_limit_after_first_use(
    url: str, stream: str, prefix: str, max_age: int
) -> float | None:
    """The stream's max_age once a bus configured with `max_age` has published to it."""
    bus = create_bus(
        "nats",
        url,
        FrozenClock(),
        stream=stream,
        subjects_prefix=prefix,
        stream_max_age_seconds=max_age,
    )
    try:
        await bus.stream_publish(f"{prefix}.events", b"kept")
        return await _stream_max_age(url, stream)
    finally:
        await bus.close()
        await _delete_stream(url, stream)


@pytest.mark.nats
@pytest.mark.parametrize(("max_age", "expected"), [(3600, 3600), (0, 0)])
async def test_nats_creates_its_stream_with_the_configured_age_limit(
    nats_url: str, max_age: int, expected: float
) -> None:
    stream, prefix = f"TEST_{uuid.uuid4().hex}", f"t{uuid.uuid4().hex}"
    # 0 is JetStream's "no limit"
    assert await _age_limit_after_first_use(nats_url, stream, prefix, max_age) == expected


@pytest.mark.nats
async def test_nats_keeps_the_limits_of_an_existing_stream(nats_url: str) -> None:
    stream, prefix = f"TEST_{uuid.uuid4().hex}", f"t{uuid.uuid4().hex}"
    client = Client()
    await client.connect(servers=[nats_url], allow_reconnect=False)
    await client.jetstream().add_stream(name=stream, subjects=[f"{prefix}.>"], max_age=60)
    await client.close()
    # The operator's tuning stands.
    assert await _age_limit_after_first_use(nats_url, stream, prefix, 3600) == 60
