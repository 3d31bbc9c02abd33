"""One conformance suite for every `KeyValueStore` backend.

The memory store runs on a FrozenClock, so expiry is tested by moving the clock; Redis expires keys
on its own clock, so its cases use a short real TTL and sleep past it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from tabard.core.clock import FrozenClock
from tabard.core.kv import KeyValueStore, RateLimitState, create_kv
from tabard.core.kv.memory import MemoryKeyValueStore
from tabard.core.metrics import REGISTRY

TIMEOUT = 10


@dataclass
class Backend:
    """A store under test, the TTL its expiry cases use, and how to let time pass for it."""

    store: KeyValueStore
    ttl: float
    elapse: Callable[[float], Awaitable[None]]
    make_store: Callable[[str], KeyValueStore]


@asynccontextmanager
async def _memory_backend() -> AsyncIterator[Backend]:
    clock = FrozenClock()

    async def elapse(seconds: float) -> None:
        clock.advance(seconds)

    store = create_kv("memory", "", clock)
    try:
        yield Backend(store, 30.0, elapse, lambda _namespace: create_kv("memory", "", clock))
    finally:
        await store.close()


@asynccontextmanager
async def _redis_backend(url: str) -> AsyncIterator[Backend]:
    url = _with_socket_timeouts(url)
    namespace = f"test-{uuid.uuid4().hex}"
    clock = FrozenClock()  # unused by Redis, which expires keys on the server's clock

    def make_store(ns: str) -> KeyValueStore:
        return create_kv("redis", url, clock, namespace=ns)

    store = make_store(namespace)
    try:
        yield Backend(store, 0.2, asyncio.sleep, make_store)
    finally:
        await store.close()
        await _delete_namespace(url, namespace)


def _with_socket_timeouts(url: str) -> str:
    # A stalled server must fail the test, not hang it: every Redis call is bounded.
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}socket_timeout={TIMEOUT}&socket_connect_timeout={TIMEOUT}"


async def _delete_namespace(url: str, namespace: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        backend = _memory_backend()
    else:
        backend = _redis_backend(request.getfixturevalue("redis_url"))
    async with backend as ready:
        yield ready


def key() -> str:
    return f"k-{uuid.uuid4().hex}"


async def test_get_of_a_missing_key_is_none(kv: Backend) -> None:
    assert await kv.store.get(key()) is None


async def test_set_then_get_round_trips_bytes(kv: Backend) -> None:
    name = key()
    await kv.store.set(name, b"\x00\xffvalue")
    assert await kv.store.get(name) == b"\x00\xffvalue"


async def test_set_replaces_value_and_ttl(kv: Backend) -> None:
    name = key()
    await kv.store.set(name, b"old", ttl_seconds=kv.ttl)
    await kv.store.set(name, b"new")
    assert await kv.store.get(name) == b"new"
    assert await kv.store.ttl(name) is None
    await kv.elapse(kv.ttl * 1.5)
    assert await kv.store.get(name) == b"new"


async def test_key_expires_after_its_ttl(kv: Backend) -> None:
    name = key()
    await kv.store.set(name, b"v", ttl_seconds=kv.ttl)
    remaining = await kv.store.ttl(name)
    assert remaining is not None
    assert 0 < remaining <= kv.ttl
    await kv.elapse(kv.ttl * 1.5)
    assert await kv.store.get(name) is None
    assert await kv.store.ttl(name) is None


async def test_ttl_is_none_without_expiry_or_key(kv: Backend) -> None:
    name = key()
    assert await kv.store.ttl(name) is None
    await kv.store.set(name, b"v")
    assert await kv.store.ttl(name) is None


@pytest.mark.parametrize("bad_ttl", [0, -1.0])
async def test_non_positive_ttl_is_rejected(kv: Backend, bad_ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        await kv.store.set(key(), b"v", ttl_seconds=bad_ttl)
    with pytest.raises(ValueError, match="ttl_seconds"):
        await kv.store.set_if_absent(key(), b"v", ttl_seconds=bad_ttl)
    with pytest.raises(ValueError, match="ttl_seconds"):
        await kv.store.incr(key(), ttl_seconds=bad_ttl)


async def test_set_if_absent_has_exactly_one_winner(kv: Backend) -> None:
    name = key()
    values = [f"caller-{i}".encode() for i in range(20)]
    results = await asyncio.gather(*(kv.store.set_if_absent(name, v) for v in values))
    assert results.count(True) == 1
    assert await kv.store.get(name) == values[results.index(True)]


async def test_set_if_absent_keeps_an_existing_value(kv: Backend) -> None:
    name = key()
    await kv.store.set(name, b"first")
    assert await kv.store.set_if_absent(name, b"second") is False
    assert await kv.store.get(name) == b"first"


async def test_set_if_absent_succeeds_again_once_the_key_expired(kv: Backend) -> None:
    name = key()
    assert await kv.store.set_if_absent(name, b"lock-1", ttl_seconds=kv.ttl) is True
    assert await kv.store.ttl(name) is not None
    await kv.elapse(kv.ttl * 1.5)
    assert await kv.store.set_if_absent(name, b"lock-2") is True
    assert await kv.store.get(name) == b"lock-2"


async def test_incr_creates_and_adds(kv: Backend) -> None:
    name = key()
    assert await kv.store.incr(name) == 1
    assert await kv.store.incr(name, 5) == 6
    assert await kv.store.incr(name, -10) == -4
    assert await kv.store.get(name) == b"-4"


async def test_incr_is_atomic_under_concurrency(kv: Backend) -> None:
    name = key()
    results = await asyncio.gather(*(kv.store.incr(name) for _ in range(50)))
    assert sorted(results) == list(range(1, 51))
    assert await kv.store.get(name) == b"50"


async def test_incr_sets_the_ttl_only_when_creating(kv: Backend) -> None:
    name = key()
    await kv.store.incr(name, ttl_seconds=kv.ttl)
    await kv.elapse(kv.ttl / 2)
    assert await kv.store.incr(name, ttl_seconds=kv.ttl) == 2
    remaining = await kv.store.ttl(name)
    assert remaining is not None
    assert remaining < kv.ttl * 0.75  # not renewed by the second increment
    await kv.elapse(kv.ttl)
    assert await kv.store.get(name) is None
    assert await kv.store.incr(name, ttl_seconds=kv.ttl) == 1


async def test_incr_ignores_the_ttl_of_an_existing_counter(kv: Backend) -> None:
    name = key()
    await kv.store.incr(name)
    await kv.store.incr(name, ttl_seconds=kv.ttl)
    assert await kv.store.ttl(name) is None


async def test_incr_continues_a_counter_stored_with_set(kv: Backend) -> None:
    name = key()
    await kv.store.set(name, b"41")
    assert await kv.store.incr(name) == 42


@pytest.mark.parametrize("value", [b"abc", b"1.5", b" 5", b""])
async def test_incr_of_a_non_integer_raises_value_error(kv: Backend, value: bytes) -> None:
    name = key()
    await kv.store.set(name, value)
    with pytest.raises(ValueError, match="not an integer"):
        await kv.store.incr(name)
    assert await kv.store.get(name) == value


async def test_delete_reports_whether_the_key_existed(kv: Backend) -> None:
    name = key()
    await kv.store.set(name, b"v")
    assert await kv.store.delete(name) is True
    assert await kv.store.get(name) is None
    assert await kv.store.delete(name) is False


async def test_delete_of_an_expired_key_is_false(kv: Backend) -> None:
    name = key()
    await kv.store.set(name, b"v", ttl_seconds=kv.ttl)
    await kv.elapse(kv.ttl * 1.5)
    assert await kv.store.delete(name) is False


async def test_take_returns_the_value_once(kv: Backend) -> None:
    name = key()
    await kv.store.set(name, b"s3cr3t", ttl_seconds=60)
    assert await kv.store.take(name) == b"s3cr3t"
    assert await kv.store.take(name) is None
    assert await kv.store.get(name) is None


async def test_take_of_an_expired_key_is_none(kv: Backend) -> None:
    name = key()
    await kv.store.set(name, b"s3cr3t", ttl_seconds=kv.ttl)
    await kv.elapse(kv.ttl * 2)
    assert await kv.store.take(name) is None


async def test_take_has_exactly_one_winner_under_concurrency(kv: Backend) -> None:
    name = key()
    await kv.store.set(name, b"s3cr3t", ttl_seconds=60)
    results = await asyncio.gather(*(kv.store.take(name) for _ in range(20)))
    assert [value for value in results if value is not None] == [b"s3cr3t"]


async def test_ping_succeeds_on_a_live_store(kv: Backend) -> None:
    await kv.store.ping()


async def test_namespaces_do_not_collide(kv: Backend) -> None:
    name = key()
    other = kv.make_store(f"test-{uuid.uuid4().hex}")
    try:
        await kv.store.set(name, b"mine")
        assert await other.get(name) is None
        assert await other.set_if_absent(name, b"theirs") is True
        assert await kv.store.get(name) == b"mine"
        await other.delete(name)
    finally:
        await other.close()


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown key-value backend"):
        create_kv("memcached", "", FrozenClock())


async def test_memory_store_sweeps_expired_keys_it_is_not_asked_about() -> None:
    clock = FrozenClock()
    store = MemoryKeyValueStore(clock)
    for i in range(5000):
        await store.set(f"old-{i}", b"v", ttl_seconds=1)
    clock.advance(2)
    for i in range(5000):
        await store.set(f"new-{i}", b"v")
    # Internal size is the behaviour under test: dead keys must not accumulate forever.
    assert len(store._data) < 6000
    assert await store.get("new-0") == b"v"


async def test_get_many_answers_in_order_with_none_for_missing_keys(kv: Backend) -> None:
    first, second, missing = key(), key(), key()
    await kv.store.set(first, b"1")
    await kv.store.set(second, b"2")
    assert await kv.store.get_many([second, missing, first]) == [b"2", None, b"1"]


async def test_get_many_of_no_keys_is_empty(kv: Backend) -> None:
    assert await kv.store.get_many([]) == []


async def test_get_many_treats_expired_keys_as_missing(kv: Backend) -> None:
    lasting, expiring = key(), key()
    await kv.store.set(lasting, b"stays")
    await kv.store.set(expiring, b"goes", ttl_seconds=kv.ttl)
    await kv.elapse(kv.ttl * 1.5)
    assert await kv.store.get_many([lasting, expiring]) == [b"stays", None]


async def test_gcra_allows_the_burst_then_refuses(kv: Backend) -> None:
    name = key()
    # One unit per kv.ttl seconds, three at once from a full bucket.
    states = [await kv.store.gcra(name, period_seconds=kv.ttl, limit=1, burst=3) for _ in range(4)]
    assert [state.allowed for state in states] == [True, True, True, False]
    assert [state.remaining for state in states] == [2, 1, 0, 0]
    assert states[0].retry_after_seconds == 0
    refused = states[3]
    assert 0 < refused.retry_after_seconds <= kv.ttl
    assert 2 * kv.ttl < refused.reset_after_seconds <= 3 * kv.ttl


async def test_gcra_refills_one_unit_per_interval(kv: Backend) -> None:
    name = key()
    for _ in range(3):
        assert (await kv.store.gcra(name, period_seconds=kv.ttl, limit=1, burst=3)).allowed
    await kv.elapse(kv.ttl * 1.5)
    after = await kv.store.gcra(name, period_seconds=kv.ttl, limit=1, burst=3)
    assert after.allowed
    assert after.remaining == 0
    assert not (await kv.store.gcra(name, period_seconds=kv.ttl, limit=1, burst=3)).allowed


async def test_gcra_bucket_full_again_after_the_reset_time(kv: Backend) -> None:
    name = key()
    last = None
    for _ in range(3):
        last = await kv.store.gcra(name, period_seconds=kv.ttl, limit=1, burst=3)
    assert last is not None
    remaining_ttl = await kv.store.ttl(name)
    assert remaining_ttl is not None
    assert 2 * kv.ttl < remaining_ttl <= last.reset_after_seconds + 0.01
    await kv.elapse(last.reset_after_seconds + kv.ttl * 0.5)
    assert await kv.store.get(name) is None
    fresh = await kv.store.gcra(name, period_seconds=kv.ttl, limit=1, burst=3)
    assert (fresh.allowed, fresh.remaining) == (True, 2)


async def test_gcra_refusal_takes_nothing(kv: Backend) -> None:
    name = key()
    for _ in range(2):
        await kv.store.gcra(name, period_seconds=kv.ttl, limit=1, burst=2)
    for _ in range(5):
        assert not (await kv.store.gcra(name, period_seconds=kv.ttl, limit=1, burst=2)).allowed
    await kv.elapse(kv.ttl * 1.5)
    # Had the refusals counted, the bucket would still be empty.
    assert (await kv.store.gcra(name, period_seconds=kv.ttl, limit=1, burst=2)).allowed


async def test_gcra_cost_takes_several_units_at_once(kv: Backend) -> None:
    name = key()

    async def take(cost: int) -> RateLimitState:
        return await kv.store.gcra(name, period_seconds=kv.ttl, limit=1, burst=5, cost=cost)

    first = await take(3)
    assert (first.allowed, first.remaining) == (True, 2)
    refused = await take(3)
    assert (refused.allowed, refused.remaining) == (False, 2)
    assert 0 < refused.retry_after_seconds <= kv.ttl
    fits = await take(2)
    assert (fits.allowed, fits.remaining) == (True, 0)


async def test_gcra_spreads_the_limit_over_the_period(kv: Backend) -> None:
    name = key()

    # 4 per period, burst 2: the interval is a quarter period, so after a quarter one is back.
    async def take() -> bool:
        state = await kv.store.gcra(name, period_seconds=kv.ttl * 4, limit=4, burst=2)
        return state.allowed

    assert [await take() for _ in range(3)] == [True, True, False]
    await kv.elapse(kv.ttl * 1.2)
    assert await take()


@pytest.mark.parametrize(
    ("period", "limit", "burst", "cost"),
    [(0, 1, 1, 1), (-1.0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 0, 1), (1, 1, 2, 0), (1, 1, 2, 3)],
)
async def test_gcra_rejects_impossible_parameters(
    kv: Backend, period: float, limit: int, burst: int, cost: int
) -> None:
    with pytest.raises(ValueError, match="must be"):
        await kv.store.gcra(key(), period_seconds=period, limit=limit, burst=burst, cost=cost)


async def test_gcra_is_atomic_under_concurrency(kv: Backend) -> None:
    name = key()
    states = await asyncio.gather(
        *(kv.store.gcra(name, period_seconds=3600, limit=1, burst=10) for _ in range(50))
    )
    assert sum(state.allowed for state in states) == 10
    assert sorted(state.remaining for state in states if state.allowed) == list(range(10))


@pytest.mark.redis
async def test_gcra_holds_across_two_redis_replicas(redis_url: str) -> None:
    url = _with_socket_timeouts(redis_url)
    namespace = f"test-{uuid.uuid4().hex}"
    # Two stores are two replicas; their own clocks are far apart and must not matter.
    replicas = [
        create_kv("redis", url, FrozenClock(), namespace=namespace),
        create_kv("redis", url, FrozenClock(FrozenClock().now().replace(year=2030)), namespace),
    ]
    name = key()
    try:
        states = await asyncio.gather(
            *(
                replicas[i % 2].gcra(name, period_seconds=3600, limit=1, burst=25)
                for i in range(200)
            )
        )
        assert sum(state.allowed for state in states) == 25
        refused = [state for state in states if not state.allowed]
        assert all(0 < state.retry_after_seconds <= 3600 for state in refused)
    finally:
        for replica in replicas:
            await replica.close()
        await _delete_namespace(url, namespace)


# Automatic pipelining (Redis) -------------------------------------------------------------------


@pytest.fixture
async def redis_kv(redis_url: str) -> AsyncIterator[Backend]:
    async with _redis_backend(redis_url) as ready:
        yield ready


def _round_trips() -> tuple[float, float]:
    return (
        REGISTRY.get_sample_value("tabard_redis_round_trips_total") or 0.0,
        REGISTRY.get_sample_value("tabard_redis_commands_total") or 0.0,
    )


@pytest.mark.redis
async def test_commands_of_one_step_share_one_round_trip(redis_kv: Backend) -> None:
    names = [key() for _ in range(100)]
    await asyncio.gather(*(redis_kv.store.set(name, name.encode()) for name in names))
    trips, commands = _round_trips()
    values = await asyncio.gather(*(redis_kv.store.get(name) for name in names))
    assert values == [name.encode() for name in names]  # each caller gets its own reply
    after_trips, after_commands = _round_trips()
    assert after_commands - commands == 100
    assert after_trips - trips == 1


@pytest.mark.redis
async def test_a_lone_command_goes_out_alone(redis_kv: Backend) -> None:
    trips, commands = _round_trips()
    name = key()
    await redis_kv.store.set(name, b"v")
    assert await redis_kv.store.get(name) == b"v"
    assert _round_trips() == (trips + 2, commands + 2)


@pytest.mark.redis
async def test_a_failing_command_fails_only_its_own_caller(redis_kv: Backend) -> None:
    text, counter, fresh = key(), key(), key()
    await redis_kv.store.set(text, b"not a number")
    results = await asyncio.gather(
        redis_kv.store.incr(text),
        redis_kv.store.incr(counter, 3),
        redis_kv.store.set_if_absent(fresh, b"v"),
        redis_kv.store.get(text),
        return_exceptions=True,
    )
    assert isinstance(results[0], ValueError)
    assert results[1:] == [3, True, b"not a number"]


@pytest.mark.redis
async def test_scripts_the_server_forgot_are_loaded_again(
    redis_kv: Backend, redis_url: str
) -> None:
    name = key()
    await redis_kv.store.incr(name)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.script_flush()  # as after a Redis restart
    finally:
        await client.aclose()
    results = await asyncio.gather(
        *(redis_kv.store.incr(name) for _ in range(5)),
        *(redis_kv.store.gcra(key(), period_seconds=60, limit=1, burst=1) for _ in range(5)),
    )
    assert sorted(results[:5]) == [2, 3, 4, 5, 6]
    assert all(state.allowed for state in results[5:])


@pytest.mark.redis
async def test_a_cancelled_caller_leaves_the_batch_alone(redis_kv: Backend) -> None:
    name = key()
    await redis_kv.store.set(name, b"v")
    doomed = asyncio.ensure_future(redis_kv.store.get(name))
    survivors = [asyncio.ensure_future(redis_kv.store.get(name)) for _ in range(3)]
    await asyncio.sleep(0)  # every caller has queued its command
    doomed.cancel()
    assert await asyncio.gather(*survivors) == [b"v"] * 3
    with pytest.raises(asyncio.CancelledError):
        await doomed


async def test_an_unreachable_redis_fails_every_caller_of_the_batch() -> None:
    store = create_kv("redis", "redis://127.0.0.1:1/0?socket_connect_timeout=2", FrozenClock())
    try:
        results = await asyncio.gather(
            *(store.get(key()) for _ in range(5)), store.set(key(), b"v"), return_exceptions=True
        )
        assert all(isinstance(result, redis.exceptions.ConnectionError) for result in results)
    finally:
        await store.close()
