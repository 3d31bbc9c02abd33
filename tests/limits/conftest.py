"""A kv store of each backend for the limits tests, with a clock and a way to let time pass.

Quota keys follow the clock (UTC dates), so `clock.advance` crosses a day on either backend.
Rate buckets run on the store's own time: the memory store's FrozenClock, or Redis's server clock,
which only real time moves (`sleep`), so Redis cases use short intervals.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from tabard.core.clock import FrozenClock
from tabard.core.kv import KeyValueStore, create_kv

TIMEOUT = 10


@dataclass
class Store:
    kv: KeyValueStore
    clock: FrozenClock
    sleep: Callable[[float], Awaitable[None]]
    make_replica: Callable[[], KeyValueStore]


def redis_with_timeouts(url: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}socket_timeout={TIMEOUT}&socket_connect_timeout={TIMEOUT}"


async def delete_namespace(url: str, namespace: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    clock = FrozenClock(datetime(2026, 1, 31, 23, 0, tzinfo=UTC))
    if request.param == "memory":

        async def advance(seconds: float) -> None:
            clock.advance(seconds)

        memory = create_kv("memory", "", clock)
        yield Store(memory, clock, advance, lambda: memory)
        await memory.close()
        return
    url = redis_with_timeouts(request.getfixturevalue("redis_url"))
    namespace = f"test-{uuid.uuid4().hex}"
    replicas: list[KeyValueStore] = []

    def make_replica() -> KeyValueStore:
        replicas.append(create_kv("redis", url, clock, namespace=namespace))
        return replicas[-1]

    try:
        yield Store(make_replica(), clock, asyncio.sleep, make_replica)
    finally:
        for replica in replicas:
            await replica.close()
        await delete_namespace(url, namespace)
