"""Ids are UUIDv7: time-ordered, unique, and dated when they were made, even in a burst."""

from __future__ import annotations

import time
import uuid

from tabard.core.ids import CLIENT_ID_PREFIX, new_client_id, new_id

_BURST = 20_000


def embedded_ms(value: str) -> int:
    return uuid.UUID(value).int >> 80  # the 48-bit Unix time in milliseconds (RFC 9562 §5.7)


def test_an_id_is_a_version_7_uuid() -> None:
    parsed = uuid.UUID(new_id())
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_a_burst_of_ids_is_unique_and_in_order() -> None:
    ids = [new_id() for _ in range(_BURST)]
    assert len(set(ids)) == _BURST
    assert ids == sorted(ids)


def test_a_burst_of_ids_is_not_dated_in_the_future() -> None:
    # uuid6 moved every id made within one millisecond a millisecond ahead: 20,000 ids made in
    # ~40 ms were dated up to 20 s in the future. A counter orders them instead.
    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(_BURST)]
    after = time.time_ns() // 1_000_000
    assert before <= embedded_ms(ids[0])
    assert embedded_ms(ids[-1]) <= after + 1


def test_a_client_id_is_prefixed_and_unique() -> None:
    first, second = new_client_id(), new_client_id()
    assert first.startswith(CLIENT_ID_PREFIX)
    assert uuid.UUID(hex=first.removeprefix(CLIENT_ID_PREFIX)).version == 7
    assert first != second
