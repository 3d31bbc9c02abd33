"""Two replicas (two runtimes on one database): the per-process key cache follows rotations made
elsewhere within `REFRESH_SECONDS`, and concurrent rotations leave exactly one active key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select, text

from tabard.api.app import build_runtime, create_app
from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tabard.core.context import SYSTEM, Context
from tabard.core.runtime import Runtime
from tabard.signing import service as keys
from tabard.signing.errors import SigningKeyRotationConflict
from tabard.signing.keyring import REFRESH_SECONDS, UNKNOWN_KID_REFRESH_SECONDS
from tabard.signing.models import SigningKey
from tests.signing.support import active, rotate, rows


@pytest_asyncio.fixture
async def other(settings: Settings, clock: FrozenClock) -> AsyncIterator[Runtime]:
    """A second replica: its own engine, key store and key cache, on the same database."""
    replica = build_runtime(settings, clock=clock)
    yield replica
    await replica.kv.close()
    await replica.bus.close()
    await replica.database.close()


async def _verification_keys(runtime: Runtime) -> dict[str, object]:
    cache = keys.keys_for(runtime.keystore, runtime.clock)
    return dict(await cache.verification_keys(runtime.database))


class TestKeyCache:
    async def test_a_rotation_elsewhere_reaches_this_replica_within_the_interval(
        self, runtime: Runtime, other: Runtime, clock: FrozenClock
    ) -> None:
        old = await active(runtime)
        new = (await rotate(other)).key
        assert (await active(other)).kid == new.kid  # the rotating replica switches at commit
        assert (await active(runtime)).kid == old.kid  # served from memory, no query
        clock.advance(REFRESH_SECONDS)
        assert (await active(runtime)).kid == new.kid

    async def test_revoke_previous_elsewhere_stops_signing_and_verifying_with_the_old_key(
        self, runtime: Runtime, other: Runtime, clock: FrozenClock
    ) -> None:
        old = await active(runtime)
        assert old.kid in await _verification_keys(runtime)
        new = (await rotate(other, revoke_previous=True)).key
        clock.advance(REFRESH_SECONDS)
        assert (await active(runtime)).kid == new.kid
        assert set(await _verification_keys(runtime)) == {new.kid}

    async def test_a_retired_key_verifies_until_its_window_closes(
        self, runtime: Runtime, other: Runtime, clock: FrozenClock
    ) -> None:
        old = await active(runtime)
        rotation = await rotate(other)
        clock.advance(REFRESH_SECONDS)
        assert set(await _verification_keys(runtime)) == {old.kid, rotation.key.kid}
        assert rotation.previous_publish_until is not None
        clock.advance((rotation.previous_publish_until - clock.now()).total_seconds())
        assert set(await _verification_keys(runtime)) == {rotation.key.kid}

    async def test_an_unknown_kid_is_looked_up_again_at_most_once_a_second(
        self, runtime: Runtime, other: Runtime, clock: FrozenClock
    ) -> None:
        await active(runtime)
        cache = keys.keys_for(runtime.keystore, runtime.clock)
        await cache.verification_keys(runtime.database)
        new = (await rotate(other)).key
        assert await cache.verification_key(runtime.database, new.kid) is None  # just read
        clock.advance(UNKNOWN_KID_REFRESH_SECONDS)
        found = await cache.verification_key(runtime.database, new.kid)
        assert found is not None
        assert found["kid"] == new.kid

    async def test_the_jwks_is_served_without_opening_a_private_key(
        self, settings: Settings, runtime: Runtime, clock: FrozenClock
    ) -> None:
        """A fresh replica serves the key set even though no private half could be decrypted."""
        await active(runtime)
        async with runtime.database.unit_of_work() as session:
            wipe = text("UPDATE signing_keys SET sealed_private_key = :b")
            await session.execute(wipe, {"b": b""})
        fresh = build_runtime(settings, clock=clock)
        transport = httpx.ASGITransport(app=create_app(settings, runtime=fresh))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as http:
                response = await http.get("/.well-known/jwks.json")
        finally:
            await fresh.database.close()
        assert response.status_code == 200
        assert len(response.json()["keys"]) == 1


class TestConcurrentRotation:
    async def test_two_replicas_rotating_at_once_leave_exactly_one_active_key(
        self, runtime: Runtime, other: Runtime
    ) -> None:
        await active(runtime)
        for _ in range(4):
            outcomes = await asyncio.gather(rotate(runtime), rotate(other), return_exceptions=True)
            for outcome in outcomes:
                assert isinstance(outcome, keys.Rotation | SigningKeyRotationConflict), outcome
            assert any(isinstance(outcome, keys.Rotation) for outcome in outcomes)
            assert await _count_active(runtime) == 1

    async def test_a_rotation_that_loses_the_race_answers_conflict_on_postgres(
        self, settings: Settings, runtime: Runtime, other: Runtime
    ) -> None:
        """Replica B starts while A's rotation is uncommitted. PostgreSQL makes B wait on A's
        row, then B finds the key it meant to retire already retired: 409, nothing written.
        SQLite queues B's whole write transaction behind A's, so B rotates after A."""
        first = await active(runtime)
        async with runtime.database.unit_of_work() as session:
            winner = await keys.rotate(session, _ctx(runtime), runtime.keystore, runtime.settings)
            loser = asyncio.create_task(rotate(other))
            await _until_waiting(runtime, loser)
        if settings.is_postgres:
            with pytest.raises(SigningKeyRotationConflict):
                await loser
            assert {row.status for row in (await rows(runtime)).values()} == {"active", "retired"}
        else:
            assert (await loser).previous_kid == winner.key.kid
        assert await _count_active(runtime) == 1
        assert (await rows(runtime))[first.kid].status == "retired"


def _ctx(runtime: Runtime) -> Context:
    return Context(actor=SYSTEM, clock=runtime.clock, kv=runtime.kv)


async def _count_active(runtime: Runtime) -> int:
    async with runtime.database.read_only() as session:
        statement = select(func.count()).where(SigningKey.status == "active")
        return int((await session.execute(statement)).scalar_one())


async def _until_waiting(runtime: Runtime, task: asyncio.Task[keys.Rotation]) -> None:
    """Let the other rotation reach its blocking point: a row lock on PostgreSQL (seen in
    pg_stat_activity), SQLite's write lock (nothing to observe: give it a moment)."""
    if not runtime.settings.is_postgres:
        await asyncio.sleep(0.2)
        return
    for _ in range(500):
        await asyncio.sleep(0.02)
        assert not task.done(), "the second rotation did not wait for the first one"
        if await _postgres_lock_waiters(runtime) > 0:
            return
    pytest.fail("the second rotation never waited on the first one's lock")


async def _postgres_lock_waiters(runtime: Runtime) -> int:
    async with runtime.database.read_only() as session:
        statement = text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return int((await session.execute(statement)).scalar_one())
