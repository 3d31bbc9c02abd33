"""In-process event bus: asyncio queues for pub/sub and an in-memory log for the stream.

A `MemoryBroker` plays the part of the NATS server (subscriptions, the stream, durable consumer
state); each `MemoryEventBus` is a client of one broker. Buses sharing a broker behave like
replicas sharing a server, which is how tests exercise cross-replica delivery in one process.
Nothing survives the process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from tabard.core.bus import (
    Message,
    StreamMessage,
    require_durable,
    require_positive,
    require_subject,
    subject_matches,
)
from tabard.core.clock import Clock

# JetStream's default duplicate window, so msg_id dedupe behaves the same on both backends.
DEDUPE_WINDOW_SECONDS = 120.0
# The stream drops its oldest messages beyond this, so a long-running process stays bounded.
MAX_STREAM_MESSAGES = 100_000
# A subscriber this far behind loses new messages instead of growing memory without bound.
SUBSCRIBER_BUFFER = 10_000
# Idle consumers re-check this often: redelivery deadlines are read from the injected clock,
# which may be a test clock that moves without any event to wake them.
POLL_INTERVAL_SECONDS = 0.05


@dataclass(slots=True)
class _Stored:
    seq: int
    subject: str
    payload: bytes
    msg_id: str | None
    stored_at: float


@dataclass(slots=True)
class _Durable:
    subject_filter: str
    ack_wait: float
    next_seq: int = 1
    due: dict[int, float] = field(default_factory=dict)  # un-acked seq -> redelivery time
    deliveries: dict[int, int] = field(default_factory=dict)  # un-acked seq -> times delivered


class _Subscription:
    """A pub/sub subscriber's queue, and the iterator its owner reads."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        # None marks the end; the queue is unbounded so the end marker always fits, and
        # `offer` enforces the buffer limit instead.
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self._ended = False

    def offer(self, message: Message) -> None:
        if not self._ended and self._queue.qsize() < SUBSCRIBER_BUFFER:
            self._queue.put_nowait(message)

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(None)

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> Message:
        message = await self._queue.get()
        if message is None:
            self._queue.put_nowait(None)  # later calls must stop too
            raise StopAsyncIteration
        return message


class MemoryBroker:
    """The shared state of in-process buses: subscribers, the stream log, durable consumers.

    Every method runs without awaiting, so each is atomic on the event loop.
    """

    def __init__(self, clock: Clock, subjects_prefix: str = "tabard") -> None:
        self.clock = clock
        self.stream_pattern = f"{subjects_prefix}.>"
        self._subscriptions: set[_Subscription] = set()
        self._log: deque[_Stored] = deque()
        self._last_seq = 0
        self._ids: dict[str, _Stored] = {}  # msg_id -> message, oldest first
        self._durables: dict[str, _Durable] = {}
        self._changed = asyncio.Event()

    def add(self, subscription: _Subscription) -> None:
        self._subscriptions.add(subscription)

    def remove(self, subscription: _Subscription) -> None:
        self._subscriptions.discard(subscription)
        subscription.end()

    def fan_out(self, message: Message) -> None:
        for subscription in self._subscriptions:
            if subject_matches(subscription.pattern, message.subject):
                subscription.offer(message)

    def append(self, subject: str, payload: bytes, msg_id: str | None) -> int:
        """Store a message in the stream; a msg_id seen within the window returns its seq."""
        now = self.clock.timestamp()
        self._forget_ids_before(now - DEDUPE_WINDOW_SECONDS)
        if msg_id is not None and msg_id in self._ids:
            return self._ids[msg_id].seq
        self._last_seq += 1
        stored = _Stored(self._last_seq, subject, payload, msg_id, now)
        self._log.append(stored)
        if len(self._log) > MAX_STREAM_MESSAGES:
            self._log.popleft()
        if msg_id is not None:
            self._ids[msg_id] = stored
        self.notify()
        return stored.seq

    def durable(self, name: str, subject_filter: str, ack_wait: float) -> _Durable:
        """The consumer `name`, created at the start of the stream or updated in place."""
        state = self._durables.setdefault(name, _Durable(subject_filter, ack_wait))
        state.subject_filter = subject_filter
        state.ack_wait = ack_wait
        return state

    def take(self, durable: _Durable) -> StreamMessage | None:
        """The next message for `durable`: a redelivery that is due first, else a new one."""
        now = self.clock.timestamp()
        stored = self._next_due(durable, now) or self._next_new(durable)
        if stored is None:
            return None
        durable.due[stored.seq] = now + durable.ack_wait
        durable.deliveries[stored.seq] = durable.deliveries.get(stored.seq, 0) + 1
        return self._delivery(durable, stored)

    def notify(self) -> None:
        """Wake every consumer waiting in `wait_for_change`."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_change(self) -> None:
        """Return on the next `notify`, or after the poll interval at the latest."""
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), POLL_INTERVAL_SECONDS)

    def _forget_ids_before(self, cutoff: float) -> None:
        while self._ids:
            msg_id, stored = next(iter(self._ids.items()))
            if stored.stored_at > cutoff:
                return
            del self._ids[msg_id]

    def _stored(self, seq: int) -> _Stored | None:
        if not self._log or seq < self._log[0].seq:
            return None
        index = seq - self._log[0].seq
        return self._log[index] if index < len(self._log) else None

    def _next_due(self, durable: _Durable, now: float) -> _Stored | None:
        while True:
            seq = min((s for s, at in durable.due.items() if at <= now), default=None)
            if seq is None:
                return None
            stored = self._stored(seq)
            if stored is not None:
                return stored
            _forget(durable, seq)  # dropped from the stream: nothing left to redeliver

    def _next_new(self, durable: _Durable) -> _Stored | None:
        if self._log:
            durable.next_seq = max(durable.next_seq, self._log[0].seq)
        while durable.next_seq <= self._last_seq:
            stored = self._stored(durable.next_seq)
            durable.next_seq += 1
            if stored is not None and subject_matches(durable.subject_filter, stored.subject):
                return stored
        return None

    def _delivery(self, durable: _Durable, stored: _Stored) -> StreamMessage:
        seq = stored.seq

        async def ack() -> None:
            _forget(durable, seq)

        async def nak(delay_seconds: float) -> None:
            if seq in durable.due:
                durable.due[seq] = self.clock.timestamp() + delay_seconds
                self.notify()

        return StreamMessage(
            subject=stored.subject,
            payload=stored.payload,
            seq=seq,
            msg_id=stored.msg_id,
            deliveries=durable.deliveries[seq],
            _ack=ack,
            _nak=nak,
        )


def _forget(durable: _Durable, seq: int) -> None:
    durable.due.pop(seq, None)
    durable.deliveries.pop(seq, None)


class _Consumer:
    """Iterator over a durable's messages; stops when its context or its bus is closed."""

    def __init__(self, bus: MemoryEventBus, durable: _Durable) -> None:
        self._bus = bus
        self._durable = durable
        self.open = True

    def __aiter__(self) -> _Consumer:
        return self

    async def __anext__(self) -> StreamMessage:
        while self.open and not self._bus.closed:
            message = self._bus.broker.take(self._durable)
            if message is not None:
                return message
            await self._bus.broker.wait_for_change()
        raise StopAsyncIteration


class MemoryEventBus:
    """`EventBus` within one process; see the module docstring for sharing a broker."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.closed = False
        self._subscriptions: set[_Subscription] = set()

    async def publish(self, subject: str, payload: bytes) -> None:
        self._check_open()
        require_subject(subject)
        self.broker.fan_out(Message(subject, payload))
        if subject_matches(self.broker.stream_pattern, subject):
            self.broker.append(subject, payload, None)

    @asynccontextmanager
    async def subscribe(self, subject_pattern: str) -> AsyncIterator[AsyncIterator[Message]]:
        self._check_open()
        require_subject(subject_pattern, pattern=True)
        subscription = _Subscription(subject_pattern)
        self.broker.add(subscription)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            self.broker.remove(subscription)

    async def stream_publish(self, subject: str, payload: bytes, msg_id: str | None = None) -> int:
        self._check_open()
        self._check_stream_subject(subject)
        seq = self.broker.append(subject, payload, msg_id)
        # Like a JetStream publish, which is also a plain publish on its subject.
        self.broker.fan_out(Message(subject, payload))
        return seq

    @asynccontextmanager
    async def consume(
        self, durable: str, subject_filter: str, ack_wait_seconds: float = 30
    ) -> AsyncIterator[AsyncIterator[StreamMessage]]:
        self._check_open()
        require_durable(durable)
        require_subject(subject_filter, pattern=True)
        require_positive("ack_wait_seconds", ack_wait_seconds)
        consumer = _Consumer(self, self.broker.durable(durable, subject_filter, ack_wait_seconds))
        try:
            yield consumer
        finally:
            consumer.open = False

    async def ping(self) -> None:
        self._check_open()

    async def close(self) -> None:
        self.closed = True
        for subscription in list(self._subscriptions):
            self.broker.remove(subscription)
        self._subscriptions.clear()
        self.broker.notify()

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("event bus is closed")

    def _check_stream_subject(self, subject: str) -> None:
        require_subject(subject)
        if not subject_matches(self.broker.stream_pattern, subject):
            raise ValueError(
                f"subject {subject!r} is outside the stream {self.broker.stream_pattern}"
            )
