"""Key-value store: small shared state with expiry (rate-limit counters, nonces, locks, caches).

Two backends honour one contract: `memory` (a single process; the default) and `redis` (shared by
every replica). Values are bytes; counters are stored as their decimal text, as Redis does.
"""

from __future__ import annotations

from typing import Protocol

from tabard.core.clock import Clock


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

    async def delete(self, key: str) -> bool:
        """Remove `key`; True when it existed (and had not expired)."""
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


__all__ = ["BACKENDS", "KeyValueStore", "create_kv", "require_ttl"]
