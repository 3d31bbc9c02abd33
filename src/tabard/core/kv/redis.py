"""Redis key-value store, shared by every replica. Expiry runs on the Redis server's clock."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from tabard.core.kv import RateLimitState, gcra_interval_us, require_ttl
from tabard.core.kv.pipelining import AutoPipeline

# EXISTS and INCRBY run as one script so no other client can create the counter in between:
# the TTL is set only by the call that created the key. ARGV[2] is the TTL in ms, 0 for none.
_INCR_SCRIPT = """
local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if created and tonumber(ARGV[2]) > 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""

# `gcra_step` of core.kv, in Lua so read-decide-write is one atomic step for every replica.
# Time is the Redis server's (TIME), so replicas whose clocks disagree still share one bucket.
# Everything is integer microseconds, which Lua's doubles hold exactly; the stored arrival time
# is formatted with %.0f because tostring() would round it to 14 digits. The key expires when
# the bucket is full again. ARGV: interval in microseconds, burst, cost.
_GCRA_SCRIPT = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tolerance = interval * burst
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
    tat = math.max(tonumber(stored), now)
end
local new_tat = tat + cost * interval
local allow_at = new_tat - tolerance
if allow_at > now then
    return {0, math.floor((now + tolerance - tat) / interval), allow_at - now, tat - now}
end
local ttl_ms = math.ceil((new_tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return {1, math.floor((now + tolerance - new_tat) / interval), 0, new_tat - now}
"""


class RedisKeyValueStore:
    """`KeyValueStore` on Redis; every key is stored as `namespace:key`.

    The connection pool opens on first use, so building the store never blocks or fails. Every
    command goes through one `AutoPipeline`: concurrent requests share round trips.
    """

    def __init__(self, url: str, namespace: str) -> None:
        self._prefix = f"{namespace}:"
        self._client = aioredis.Redis.from_url(url)
        self._pipeline = AutoPipeline(self._client)
        # Sent as EVALSHA; a server without the script gets it loaded by the Script object.
        self._incr = self._client.register_script(_INCR_SCRIPT)
        self._gcra = self._client.register_script(_GCRA_SCRIPT)

    async def get(self, key: str) -> bytes | None:
        # decode_responses is off (the default), so Redis replies with bytes, never str.
        name = self._key(key)
        return cast("bytes | None", await self._pipeline.run(lambda redis: redis.get(name)))

    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        require_ttl(ttl_seconds)
        name, px = self._key(key), _milliseconds(ttl_seconds)
        await self._pipeline.run(lambda redis: redis.set(name, value, px=px))

    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float | None = None) -> bool:
        require_ttl(ttl_seconds)
        name, px = self._key(key), _milliseconds(ttl_seconds)
        stored = await self._pipeline.run(lambda redis: redis.set(name, value, px=px, nx=True))
        return bool(stored)

    async def incr(self, key: str, amount: int = 1, ttl_seconds: float | None = None) -> int:
        require_ttl(ttl_seconds)
        try:
            result = await self._script(
                self._incr, self._key(key), amount, _milliseconds(ttl_seconds) or 0
            )
        except ResponseError as error:
            if "not an integer" in str(error):
                raise ValueError("value is not an integer") from error
            raise
        return int(result)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []  # MGET needs at least one key
        names = [self._key(key) for key in keys]
        return cast("list[bytes | None]", await self._pipeline.run(lambda redis: redis.mget(names)))

    async def gcra(
        self, key: str, *, period_seconds: float, limit: int, burst: int, cost: int = 1
    ) -> RateLimitState:
        interval_us = gcra_interval_us(period_seconds, limit, burst, cost)
        reply = await self._script(self._gcra, self._key(key), interval_us, burst, cost)
        allowed, remaining, retry_us, reset_us = (int(part) for part in reply)
        return RateLimitState(bool(allowed), max(0, remaining), retry_us / 1e6, reset_us / 1e6)

    async def delete(self, key: str) -> bool:
        name = self._key(key)
        removed: int = await self._pipeline.run(lambda redis: redis.delete(name))
        return removed > 0

    async def take(self, key: str) -> bytes | None:
        name = self._key(key)
        return cast("bytes | None", await self._pipeline.run(lambda redis: redis.getdel(name)))

    async def ttl(self, key: str) -> float | None:
        # PTTL answers -2 for a missing key and -1 for a key without expiry.
        name = self._key(key)
        remaining: int = await self._pipeline.run(lambda redis: redis.pttl(name))
        return remaining / 1000 if remaining >= 0 else None

    async def ping(self) -> None:
        await self._client.ping()  # on its own: a health check measures this store's own trip

    async def close(self) -> None:
        await self._pipeline.drain()
        # The client built the pool from the URL, so closing the client disconnects the pool.
        await self._client.aclose()

    async def _script(self, script: AsyncScript, name: str, *args: int) -> Any:
        """Run a registered script on one key: EVALSHA in this step's pipeline, or, on a
        server that does not know it yet (a restart, SCRIPT FLUSH), alone, loading it."""
        try:
            return await self._pipeline.run(lambda redis: redis.evalsha(script.sha, 1, name, *args))
        except NoScriptError:
            return await script(keys=[name], args=list(args))

    def _key(self, key: str) -> str:
        return self._prefix + key


def _milliseconds(ttl_seconds: float | None) -> int | None:
    # Rounded up: Redis takes whole milliseconds, and a key must never expire early.
    return None if ttl_seconds is None else max(1, math.ceil(ttl_seconds * 1000))
