"""Event bus: fire-and-forget pub/sub plus one durable stream with named consumers.

Two backends honour one contract: `memory` (a single process; the default) and `nats` (NATS
with JetStream, shared by every replica).

Subjects are dot-separated tokens. Patterns follow NATS: `*` matches exactly one token and `>`,
only as the last token, matches one or more tokens. The stream holds every subject under
`{subjects_prefix}.`, and, as in NATS, the two halves share subjects: a plain publish there is
also stored in the stream, and a stream publish is also delivered to matching plain subscribers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from tabard.core.clock import Clock


@dataclass(frozen=True, slots=True)
class Message:
    """A plain pub/sub message."""

    subject: str
    payload: bytes


@dataclass(slots=True)
class StreamMessage:
    """A message delivered from the durable stream to a named consumer.

    `seq` is its stream sequence (stable across redeliveries), `msg_id` the dedupe id it was
    published with, and `deliveries` how many times it has been delivered, counting this one.
    Settle it once: `ack()` when handled, or `nak()` to have it redelivered; the first of the two
    wins and later calls do nothing (a call that raised did not settle it). A message left
    unsettled is redelivered once the consumer's ack wait has passed.
    """

    subject: str
    payload: bytes
    seq: int
    msg_id: str | None
    deliveries: int
    _ack: Callable[[], Awaitable[None]] = field(repr=False, compare=False)
    _nak: Callable[[float], Awaitable[None]] = field(repr=False, compare=False)
    _settled: bool = field(default=False, repr=False, compare=False)

    async def ack(self) -> None:
        """Mark the message handled; this consumer will not receive it again."""
        if not self._settled:
            await self._ack()
            self._settled = True

    async def nak(self, delay_seconds: float = 0) -> None:
        """Ask for redelivery after `delay_seconds` (at once by default)."""
        if delay_seconds < 0:
            raise ValueError(f"delay_seconds must not be negative, got {delay_seconds!r}")
        if not self._settled:
            await self._nak(delay_seconds)
            self._settled = True


class EventBus(Protocol):
    """Pub/sub and a durable stream. Every method raises RuntimeError once the bus is closed."""

    async def publish(self, subject: str, payload: bytes) -> None:
        """Send to the current subscribers of `subject`, at most once; nobody listening is fine."""
        ...

    def subscribe(
        self, subject_pattern: str
    ) -> AbstractAsyncContextManager[AsyncIterator[Message]]:
        """Receive the messages published on subjects matching `subject_pattern`.

        Every message published after the context is entered is delivered, in publish order per
        publisher, until the context exits. A subscriber far behind may lose messages.
        """
        ...

    async def stream_publish(self, subject: str, payload: bytes, msg_id: str | None = None) -> int:
        """Store the message durably in the stream and return its stream sequence.

        `subject` must be under the stream's prefix (ValueError otherwise). A `msg_id` already
        stored within the dedupe window is not stored again: the original sequence is returned.
        """
        ...

    def consume(
        self, durable: str, subject_filter: str, ack_wait_seconds: float = 30
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamMessage]]:
        """Receive stream messages matching `subject_filter` through the consumer `durable`.

        A new durable starts at the beginning of the stream; an existing one resumes after the
        messages it acknowledged, and takes the filter and ack wait given here. Delivery is at
        least once: a message not acked within `ack_wait_seconds` is delivered again. Several
        contexts on the same durable, in any replica, share its messages between them.
        """
        ...

    async def ping(self) -> None:
        """Return when the bus is usable; raise the backend's error otherwise."""
        ...

    async def close(self) -> None:
        """End every subscription and release connections. Safe to call twice."""
        ...


BACKENDS = ("memory", "nats")


def create_bus(
    backend: str,
    url: str,
    clock: Clock,
    stream: str = "TABARD",
    subjects_prefix: str = "tabard",
    stream_max_age_seconds: float = 0,
) -> EventBus:
    """Build the bus named by `backend` ("memory" or "nats"); ValueError for any other name.

    `memory` ignores `url` and `stream` and times redelivery with `clock`. `nats` connects to `url`
    on first use and creates the JetStream stream `stream` over `{subjects_prefix}.>` if missing,
    keeping messages for `stream_max_age_seconds` (0: no age limit).
    """
    require_subject(subjects_prefix)
    # Imported on use: the backends import this module, and a memory-only process need not load
    # the NATS client.
    if backend == "memory":
        from tabard.core.bus.memory import MemoryBroker, MemoryEventBus

        return MemoryEventBus(MemoryBroker(clock, subjects_prefix))
    if backend == "nats":
        from tabard.core.bus.nats import NatsEventBus

        return NatsEventBus(
            url,
            stream=stream,
            subjects_prefix=subjects_prefix,
            stream_max_age_seconds=stream_max_age_seconds,
        )
    raise ValueError(f"unknown event bus backend {backend!r}; expected one of {BACKENDS}")


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether `subject` matches `pattern` under NATS wildcard rules (`*` one token, `>` rest)."""
    pattern_parts = pattern.split(".")
    subject_parts = subject.split(".")
    for index, part in enumerate(pattern_parts):
        if part == ">":
            return len(subject_parts) > index
        if index >= len(subject_parts) or (part != "*" and part != subject_parts[index]):
            return False
    return len(subject_parts) == len(pattern_parts)


def require_subject(subject: str, *, pattern: bool = False) -> None:
    """Reject a malformed subject (or, with `pattern`, a malformed subscription pattern)."""
    subject_parts = subject.split(".")
    for index, part in enumerate(subject_parts):
        if not part or any(char.isspace() for char in part):
            raise ValueError(f"malformed subject {subject!r}")
        wildcard = part in ("*", ">")
        if wildcard and not pattern:
            raise ValueError(f"wildcards are not allowed in subject {subject!r}")
        if part == ">" and index != len(subject_parts) - 1:
            raise ValueError(f"malformed subject {subject!r}: '>' must be its last token")
        if not wildcard and ("*" in part or ">" in part):
            raise ValueError(f"malformed subject {subject!r}")


def require_durable(name: str) -> None:
    """Reject a durable name NATS would refuse, so both backends accept the same names."""
    if not name or any(char.isspace() or char in ".*>/\\" for char in name):
        raise ValueError(f"malformed durable name {name!r}")


def require_positive(name: str, seconds: float) -> None:
    if not seconds > 0:
        raise ValueError(f"{name} must be positive, got {seconds!r}")


__all__ = [
    "BACKENDS",
    "EventBus",
    "Message",
    "StreamMessage",
    "create_bus",
    "require_durable",
    "require_positive",
    "require_subject",
    "subject_matches",
]
