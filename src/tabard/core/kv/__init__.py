"""Key-value store: small shared state with expiry (rate-limit counters, nonces, locks, caches).

Two backends honour one contract: `memory` (a single process; the default) and `redis` (shared by
every replica). Values are bytes; counters are stored as their decimal text, as Redis does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tabard.core.clock import Clock


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """The outcome of one `gcra` call.

    `remaining`: how many more unit-cost requests would be allowed right now;
    `retry_after_seconds`: 0 when allowed, else how long until this request would be;
    `reset_after_seconds`: how long until the bucket is full again (all of `burst` available).
    """

    allowed: bool
    remaining: int
    retry_after_seconds: float
    reset_after_seconds: float


class KeyValueStore(Protocol):
    """Async key-value store with per-key expiry.

    `ttl_seconds`, when given, must be positive (ValueError otherwise); an expired key behaves
    exactly like a missing one. Every operation is atomic with respect to concurrent callers,
    including callers in other replicas when the backend is shared.
    """

    async def get(self, key: str) -> bytes | None:
        """Return the value of `key`, or None when it is missing or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        """Store `value`, replacing any value and TTL; no `ttl_seconds` means it never expires."""
        ...

    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float | None = None) -> bool:
        """Store `value` only when `key` is missing; True when this call stored it.

        Of any number of concurrent calls on a missing key, exactly one returns True.
        """
        ...

    async def incr(self, key: str, amount: int = 1, ttl_seconds: float | None = None) -> int:
        """Add `amount` to the counter at `key` (a missing key counts as 0) and return the result.

        `ttl_seconds` applies only when this call creates the counter, so a fixed window is not
        extended by later increments. Raises ValueError when the value is not an integer.
        """
        ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of `keys` in order (None where missing or expired), read in one round trip."""
        ...

    async def gcra(
        self, key: str, *, period_seconds: float, limit: int, burst: int, cost: int = 1
    ) -> RateLimitState:
        """Take `cost` units from the rate limit at `key`, or refuse without taking any.

        The generic cell rate algorithm: `limit` units per `period_seconds` on average, at most
        `burst` at once from a full bucket; no fixed windows, so no double burst at a window edge.
        One atomic step per call, across replicas too; the key expires once the bucket is full.
        ValueError unless period > 0, limit >= 1, burst >= 1 and 1 <= cost <= burst.
        """
        ...

    async def delete(self, key: str) -> bool:
        """Remove `key`; True when it existed (and had not expired)."""
        ...

    async def take(self, key: str) -> bytes | None:
        """Remove `key` and return its value (None when missing or expired), atomically: of any
        number of concurrent calls, exactly one gets the value (one-time secrets)."""
        ...

    async def ttl(self, key: str) -> float | None:
        """Remaining seconds before `key` expires; None when it is missing or never expires."""
        ...

    async def ping(self) -> None:
        """Return when the store is reachable; raise the backend's error otherwise."""
        ...

    async def close(self) -> None:
        """Release connections. The store must not be used afterwards."""
        ...


BACKENDS = ("memory", "redis")


def create_kv(backend: str, url: str, clock: Clock, namespace: str = "tabard") -> KeyValueStore:
    """Build the store named by `backend` ("memory" or "redis"); ValueError for any other name.

    `memory` reads expiry from `clock` and ignores `url` and `namespace` (its data is private to
    the instance). `redis` connects lazily to `url`, prefixes every key with `namespace:` and
    expires keys on the server's clock.
    """
    # Imported on use: the backends import this module, and a memory-only process need not load
    # the Redis client.
    if backend == "memory":
        from tabard.core.kv.memory import MemoryKeyValueStore

        return MemoryKeyValueStore(clock)
    if backend == "redis":
        from tabard.core.kv.redis import RedisKeyValueStore

        return RedisKeyValueStore(url, namespace)
    raise ValueError(f"unknown key-value backend {backend!r}; expected one of {BACKENDS}")


def require_ttl(ttl_seconds: float | None) -> None:
    """Reject a non-positive TTL: zero or negative would mean 'already expired', never useful."""
    if ttl_seconds is not None and not ttl_seconds > 0:
        raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds!r}")


def gcra_interval_us(period_seconds: float, limit: int, burst: int, cost: int) -> int:
    """The emission interval (time one unit takes to refill) in whole microseconds.

    Both backends compute in integer microseconds, which doubles (Redis Lua) hold exactly, so
    they agree to the microsecond; rounding the interval changes the rate by under 1 ppm for
    any rate below 1,000 per second.
    """
    if not period_seconds > 0:
        raise ValueError(f"period_seconds must be positive, got {period_seconds!r}")
    if limit < 1 or burst < 1:
        raise ValueError(f"limit and burst must be >= 1, got {limit!r} and {burst!r}")
    if not 1 <= cost <= burst:
        raise ValueError(f"cost must be between 1 and burst ({burst}), got {cost!r}")
    return max(1, round(period_seconds * 1_000_000 / limit))


def gcra_step(
    tat_us: int | None, now_us: int, *, interval_us: int, burst: int, cost: int
) -> tuple[int | None, RateLimitState]:
    """One GCRA decision: the new theoretical arrival time to store (None: refused) and the state.

    The bucket is full when the stored arrival time is at or before now; each unit moves it one
    interval later, and a request is allowed while it stays within `burst` intervals of now.
    The Redis backend runs the same arithmetic in Lua.
    """
    tolerance = interval_us * burst
    tat = now_us if tat_us is None else max(tat_us, now_us)
    new_tat = tat + cost * interval_us
    allow_at = new_tat - tolerance
    if allow_at > now_us:
        remaining = (now_us + tolerance - tat) // interval_us
        return None, _state(False, remaining, allow_at - now_us, tat - now_us)
    remaining = (now_us + tolerance - new_tat) // interval_us
    return new_tat, _state(True, remaining, 0, new_tat - now_us)


def _state(allowed: bool, remaining: int, retry_us: int, reset_us: int) -> RateLimitState:
    return RateLimitState(allowed, max(0, remaining), retry_us / 1e6, reset_us / 1e6)


__all__ = [
    "BACKENDS",
    "KeyValueStore",
    "RateLimitState",
    "create_kv",
    "gcra_interval_us",
    "gcra_step",
    "require_ttl",
]
