"""Scheduled rotation: due by age (`key_rotation_days`) or by a changed algorithm setting; never
revoking; and spent private halves erased while their rows stay."""

from __future__ import annotations

import httpx

from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tabard.core.runtime import Runtime
from tabard.signing.jobs import rotate_if_due
from tests.signing.support import active, published_kids, rotate, rows

DAY = 86400.0


async def _run(runtime: Runtime, settings: Settings | None = None) -> object:
    return await rotate_if_due(
        runtime.database, runtime.keystore, settings or runtime.settings, runtime.clock
    )


class TestRotateIfDue:
    async def test_not_due_before_key_rotation_days(
        self, runtime: Runtime, clock: FrozenClock
    ) -> None:
        old = await active(runtime)
        clock.advance(runtime.settings.key_rotation_days * DAY - 1)
        assert await _run(runtime) is None
        assert (await active(runtime)).kid == old.kid

    async def test_due_at_key_rotation_days_and_the_old_key_stays_published(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        old = await active(runtime)
        clock.advance(runtime.settings.key_rotation_days * DAY)
        rotation = await _run(runtime)
        assert rotation is not None
        assert (await active(runtime)).kid != old.kid
        assert set(await published_kids(client)) == {old.kid, (await active(runtime)).kid}
        assert (await rows(runtime))[old.kid].status == "retired"
        assert await _run(runtime) is None  # the new key is not due

    async def test_zero_days_means_no_scheduled_rotation(
        self, settings: Settings, runtime: Runtime, clock: FrozenClock
    ) -> None:
        old = await active(runtime)
        clock.advance(3650 * DAY)
        assert await _run(runtime, settings.model_copy(update={"key_rotation_days": 0})) is None
        assert (await active(runtime)).kid == old.kid

    async def test_a_changed_algorithm_setting_rotates_to_it(
        self, settings: Settings, runtime: Runtime
    ) -> None:
        old = await active(runtime)
        assert old.alg == "ES256"
        ed25519 = settings.model_copy(update={"signing_algorithm": "Ed25519"})
        assert await _run(runtime, ed25519) is not None
        assert (await active(runtime)).alg == "Ed25519"
        assert await _run(runtime, ed25519) is None

    async def test_an_empty_registry_gets_no_key_from_the_job(self, runtime: Runtime) -> None:
        assert await _run(runtime) is None
        assert await rows(runtime) == {}


class TestErasingSpentKeys:
    async def test_private_halves_go_when_keys_can_no_longer_verify(
        self, runtime: Runtime, clock: FrozenClock
    ) -> None:
        first = await active(runtime)
        second = (await rotate(runtime)).key
        third = (await rotate(runtime)).key  # second retired and still published
        await _run(runtime)
        stored = await rows(runtime)
        assert stored[first.kid].sealed_private_key != b""  # published: kept for now
        assert stored[second.kid].sealed_private_key != b""
        clock.advance((stored[first.kid].publish_until - clock.now()).total_seconds())
        await _run(runtime)
        stored = await rows(runtime)
        assert stored[first.kid].sealed_private_key == b""
        assert stored[first.kid].status == "retired"
        assert (await active(runtime)).kid == third.kid  # the active key still opens
        assert stored[third.kid].sealed_private_key != b""

    async def test_revoked_keys_lose_their_private_half_at_the_next_run(
        self, runtime: Runtime
    ) -> None:
        old = await active(runtime)
        await rotate(runtime, revoke_previous=True)
        await _run(runtime)
        assert (await rows(runtime))[old.kid].sealed_private_key == b""
