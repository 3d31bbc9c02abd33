"""NATS event bus: core NATS for pub/sub, JetStream for the durable stream.

One connection per bus, opened on first use under a lock. It reconnects on its own for as long
as the process runs; only the first connection attempt gives up, after `connect_timeout`.
Consumers are durable pull consumers, so any replica can resume or share one by name.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from nats.aio.client import Client
from nats.errors import BadSubscriptionError, ConnectionClosedError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from tabard.core.bus import (
    Message,
    StreamMessage,
    require_durable,
    require_positive,
    require_subject,
    subject_matches,
)
from tabard.core.logging import get_logger

log = get_logger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
CONNECT_TIMEOUT_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 5.0
# How long one pull request waits on the server. Short enough that a consumer cancelled while
# waiting leaves no long-lived request behind (a message sent to it would wait out ack_wait).
FETCH_WAIT_SECONDS = 2.0


class _Subscription:
    """Iterator over a core NATS subscription, as `Message`s."""

    def __init__(self, subscription: Any) -> None:
        self._messages: AsyncIterator[Any] = subscription.messages

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> Message:
        message = await anext(self._messages)
        return Message(subject=message.subject, payload=message.data)


class _Consumer:
    """Iterator over a durable pull consumer: fetches one message at a time.

    One at a time because a pull for several returns only when all arrive or the wait ends, which
    would hold back the first message; and a message is never fetched before it is wanted, so
    none waits out its ack wait in a local buffer.
    """

    def __init__(self, bus: NatsEventBus, pull: Any) -> None:
        self._bus = bus
        self._pull = pull
        self.open = True

    def __aiter__(self) -> _Consumer:
        return self

    async def __anext__(self) -> StreamMessage:
        while self.open and not self._bus.closed:
            try:
                fetched: list[Any] = await self._pull.fetch(1, timeout=FETCH_WAIT_SECONDS)
            except TimeoutError:
                continue  # nothing yet; nats raises its TimeoutError, a builtin subclass
            except ConnectionClosedError:
                break
            return _stream_message(fetched[0])
        raise StopAsyncIteration


def _stream_message(message: Any) -> StreamMessage:
    async def ack() -> None:
        # Waits for the server's confirmation: once ack() returns, no replica redelivers it.
        await message.ack_sync(timeout=REQUEST_TIMEOUT_SECONDS)

    async def nak(delay_seconds: float) -> None:
        await message.nak(delay=delay_seconds or None)

    metadata = message.metadata
    headers: dict[str, str] = message.headers or {}
    return StreamMessage(
        subject=message.subject,
        payload=message.data,
        seq=metadata.sequence.stream,
        msg_id=headers.get(MSG_ID_HEADER),
        deliveries=metadata.num_delivered,
        _ack=ack,
        _nak=nak,
    )


class NatsEventBus:
    """`EventBus` on NATS JetStream; the stream `stream` holds `{subjects_prefix}.>`."""

    def __init__(
        self,
        url: str,
        *,
        stream: str,
        subjects_prefix: str,
        stream_max_age_seconds: float = 0,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        self._url = url
        self._stream = stream
        self._stream_pattern = f"{subjects_prefix}.>"
        self._stream_max_age = stream_max_age_seconds
        self._connect_timeout = connect_timeout
        self._client: Any = None
        self._jetstream: Any = None
        self._lock = asyncio.Lock()
        self.closed = False

    async def publish(self, subject: str, payload: bytes) -> None:
        require_subject(subject)
        client, _ = await self._connection()
        await client.publish(subject, payload)

    @asynccontextmanager
    async def subscribe(self, subject_pattern: str) -> AsyncIterator[AsyncIterator[Message]]:
        require_subject(subject_pattern, pattern=True)
        client, _ = await self._connection()
        subscription = await client.subscribe(subject_pattern)
        try:
            # The round trip guarantees the server knows of the subscription before we return,
            # so a message published next, from any connection, is delivered.
            await client.flush(timeout=REQUEST_TIMEOUT_SECONDS)
            yield _Subscription(subscription)
        finally:
            with contextlib.suppress(ConnectionClosedError, BadSubscriptionError):
                await subscription.unsubscribe()

    async def stream_publish(self, subject: str, payload: bytes, msg_id: str | None = None) -> int:
        require_subject(subject)
        if not subject_matches(self._stream_pattern, subject):
            raise ValueError(f"subject {subject!r} is outside the stream {self._stream_pattern}")
        _, jetstream = await self._connection()
        headers = None if msg_id is None else {MSG_ID_HEADER: msg_id}
        ack = await jetstream.publish(
            subject, payload, timeout=REQUEST_TIMEOUT_SECONDS, stream=self._stream, headers=headers
        )
        # A duplicate's ack carries the sequence of the message first stored with that id.
        seq: int = ack.seq
        return seq

    @asynccontextmanager
    async def consume(
        self, durable: str, subject_filter: str, ack_wait_seconds: float = 30
    ) -> AsyncIterator[AsyncIterator[StreamMessage]]:
        require_durable(durable)
        require_subject(subject_filter, pattern=True)
        require_positive("ack_wait_seconds", ack_wait_seconds)
        _, jetstream = await self._connection()
        # Create-or-update: a durable that exists keeps its position and takes this config.
        await jetstream.add_consumer(
            self._stream, _consumer_config(durable, subject_filter, ack_wait_seconds)
        )
        pull = await jetstream.pull_subscribe_bind(durable=durable, stream=self._stream)
        consumer = _Consumer(self, pull)
        try:
            yield consumer
        finally:
            consumer.open = False
            with contextlib.suppress(ConnectionClosedError, BadSubscriptionError):
                await pull.unsubscribe()

    async def ping(self) -> None:
        client, jetstream = await self._connection()
        await client.flush(timeout=REQUEST_TIMEOUT_SECONDS)
        await jetstream.stream_info(self._stream)

    async def close(self) -> None:
        self.closed = True
        async with self._lock:
            client, self._client, self._jetstream = self._client, None, None
        if client is not None:
            await client.close()

    async def _connection(self) -> tuple[Any, Any]:
        """The connected client and its JetStream context, connecting on first use."""
        if self.closed:
            raise RuntimeError("event bus is closed")
        if self._client is None:
            async with self._lock:
                if self.closed:
                    raise RuntimeError("event bus is closed")
                if self._client is None:
                    self._client, self._jetstream = await self._connect()
        return self._client, self._jetstream

    async def _connect(self) -> tuple[Any, Any]:
        client = Client()
        try:
            # Unlimited reconnects keep a running server attached through NATS restarts; the
            # timeout bounds the first attempt, which would otherwise retry forever too.
            async with asyncio.timeout(self._connect_timeout):
                await client.connect(
                    servers=[self._url],
                    name="tabard",
                    max_reconnect_attempts=-1,
                    error_cb=_on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=_on_reconnected,
                )
                jetstream = client.jetstream(timeout=REQUEST_TIMEOUT_SECONDS)
                await self._ensure_stream(jetstream)
        except BaseException:
            await client.close()
            raise
        return client, jetstream

    async def _on_disconnected(self) -> None:
        if not self.closed:  # closing disconnects too; that is no news
            log.warning("nats_disconnected")

    async def _ensure_stream(self, jetstream: Any) -> None:
        # An existing stream is used as it is, so an operator may tune its limits. Replicas
        # racing to create it send the same config, which JetStream accepts as a no-op.
        try:
            await jetstream.stream_info(self._stream)
        except NotFoundError:
            await jetstream.add_stream(
                name=self._stream,
                subjects=[self._stream_pattern],
                max_age=self._stream_max_age or None,  # None: JetStream's default, no limit
            )


def _consumer_config(durable: str, subject_filter: str, ack_wait_seconds: float) -> Any:
    return ConsumerConfig(
        name=durable,
        durable_name=durable,
        filter_subject=subject_filter,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_seconds,
        max_deliver=-1,
    )


async def _on_error(error: Exception) -> None:
    log.warning("nats_error", error=repr(error))


async def _on_reconnected() -> None:
    log.info("nats_reconnected")
