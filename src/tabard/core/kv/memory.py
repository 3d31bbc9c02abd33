"""In-process key-value store: one dict, expiry read from the injected clock."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tabard.core.clock import Clock
from tabard.core.kv import RateLimitState, gcra_interval_us, gcra_step, require_ttl

# A full sweep of expired keys runs after this many writes, or after as many writes as there were
# keys left by the previous sweep when that is larger: each sweep then costs O(1) amortised per
# write, and the dict never holds more than about twice the live keys plus that many writes.
MIN_WRITES_BETWEEN_SWEEPS = 1024

_INTEGER = re.compile(rb"-?[0-9]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(slots=True)
class _Entry:
    value: bytes
    expires_at: float | None


class MemoryKeyValueStore:
    """`KeyValueStore` for a single process.

    No method awaits between reading and writing the dict, so every operation is atomic on the
    event loop without a lock. Expired keys are dropped when touched and by a periodic sweep.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._data: dict[str, _Entry] = {}
        self._writes_since_sweep = 0
        self._size_after_sweep = 0

    async def get(self, key: str) -> bytes | None:
        entry = self._live(key)
        return None if entry is None else entry.value

    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        require_ttl(ttl_seconds)
        self._write(key, _Entry(bytes(value), self._deadline(ttl_seconds)))

    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float | None = None) -> bool:
        require_ttl(ttl_seconds)
        if self._live(key) is not None:
            return False
        self._write(key, _Entry(bytes(value), self._deadline(ttl_seconds)))
        return True

    async def incr(self, key: str, amount: int = 1, ttl_seconds: float | None = None) -> int:
        require_ttl(ttl_seconds)
        entry = self._live(key)
        if entry is None:
            entry = _Entry(b"0", self._deadline(ttl_seconds))
        result = _as_int(entry.value) + amount
        entry.value = str(result).encode()
        self._write(key, entry)
        return result

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        # Inline rather than awaiting `get` per key: every token check reads eight keys.
        entries = [self._live(key) for key in keys]
        return [None if entry is None else entry.value for entry in entries]

    async def gcra(
        self, key: str, *, period_seconds: float, limit: int, burst: int, cost: int = 1
    ) -> RateLimitState:
        interval_us = gcra_interval_us(period_seconds, limit, burst, cost)
        # Exact microseconds from the datetime (a float timestamp would round them).
        now_us = (self._clock.now() - _EPOCH) // _MICROSECOND
        entry = self._live(key)
        tat_us = None if entry is None else _as_int(entry.value)
        new_tat, state = gcra_step(tat_us, now_us, interval_us=interval_us, burst=burst, cost=cost)
        if new_tat is not None:
            # The key lives exactly until the bucket is full again, as on Redis.
            self._write(
                key, _Entry(str(new_tat).encode(), self._deadline(state.reset_after_seconds))
            )
        return state

    async def delete(self, key: str) -> bool:
        return self._live(key) is not None and self._data.pop(key, None) is not None

    async def take(self, key: str) -> bytes | None:
        entry = self._live(key)
        if entry is None:
            return None
        del self._data[key]
        return entry.value

    async def ttl(self, key: str) -> float | None:
        entry = self._live(key)
        if entry is None or entry.expires_at is None:
            return None
        return entry.expires_at - self._clock.timestamp()

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()

    def _deadline(self, ttl_seconds: float | None) -> float | None:
        return None if ttl_seconds is None else self._clock.timestamp() + ttl_seconds

    def _live(self, key: str) -> _Entry | None:
        """The entry at `key` unless it has expired (an expired entry is removed here)."""
        entry = self._data.get(key)
        if entry is None or not self._expired(entry, self._clock.timestamp()):
            return entry
        del self._data[key]
        return None

    def _write(self, key: str, entry: _Entry) -> None:
        self._data[key] = entry
        self._writes_since_sweep += 1
        if self._writes_since_sweep >= max(MIN_WRITES_BETWEEN_SWEEPS, self._size_after_sweep):
            self._sweep()

    def _sweep(self) -> None:
        now = self._clock.timestamp()
        for key in [key for key, entry in self._data.items() if self._expired(entry, now)]:
            del self._data[key]
        self._writes_since_sweep = 0
        self._size_after_sweep = len(self._data)

    @staticmethod
    def _expired(entry: _Entry, now: float) -> bool:
        return entry.expires_at is not None and entry.expires_at <= now


def _as_int(value: bytes) -> int:
    # Stricter than int(): Redis refuses " 5" and "1_0", and both backends must agree.
    if _INTEGER.fullmatch(value) is None:
        raise ValueError("value is not an integer")
    return int(value)
