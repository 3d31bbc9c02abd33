"""Rotation without a flag day, and the emergency path: what signs, what the JWKS publishes and
for how long, what is audited, and what the token service learns through `keys_revoked`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tabard.core.context import Context
from tabard.core.outbox import OutboxEvent
from tabard.core.runtime import Runtime
from tabard.signing import service as keys
from tabard.signing.models import SigningKey
from tests.conftest import ADMIN
from tests.signing.support import active, published_kids, rotate, rows


class RevokedKidsRecorder:
    """A `keys_revoked` subscriber standing for the token service: records what it is told and
    what its session sees, and can veto (raise) like any hook handler."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.statuses_seen: list[dict[str, str]] = []
        self.fail = False

    async def __call__(self, session: AsyncSession, ctx: Context, kids: list[str]) -> None:
        if self.fail:
            raise RuntimeError("the token service refused")
        self.calls.append(list(kids))
        statement = select(SigningKey.kid, SigningKey.status).where(SigningKey.kid.in_(kids))
        found = (await session.execute(statement)).all()
        self.statuses_seen.append(dict(found))


RECORDER = RevokedKidsRecorder()
keys.keys_revoked.register(RECORDER)


@pytest.fixture
def recorder() -> Iterator[RevokedKidsRecorder]:
    RECORDER.calls.clear()
    RECORDER.statuses_seen.clear()
    RECORDER.fail = False
    yield RECORDER
    RECORDER.fail = False


def _window(settings: Settings) -> float:
    """How long a retired key stays published: the longest token lifetime plus leeway."""
    leeway = keys.RETIREMENT_LEEWAY.total_seconds()
    return settings.access_token_max_lifetime_seconds + leeway


class TestRotate:
    async def test_the_new_key_signs_at_once_and_the_old_one_stays_published(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        old = await active(runtime)
        rotation = await rotate(runtime)
        assert rotation.previous_kid == old.kid
        assert (await active(runtime)).kid == rotation.key.kid
        assert await published_kids(client) == [rotation.key.kid, old.kid]
        retired = (await rows(runtime))[old.kid]
        assert retired.status == "retired"
        assert retired.retired_at == clock.now()
        expected_until = clock.now() + timedelta(seconds=_window(runtime.settings))
        assert retired.publish_until == rotation.previous_publish_until == expected_until

    async def test_a_retired_key_leaves_the_jwks_when_its_window_closes(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        old = await active(runtime)
        rotation = await rotate(runtime)
        clock.advance(_window(runtime.settings) - 1)
        assert old.kid in await published_kids(client)
        clock.advance(1)
        assert await published_kids(client) == [rotation.key.kid]
        assert (await rows(runtime))[old.kid].status == "retired"  # the row is kept

    async def test_the_window_follows_the_longest_token_lifetime(
        self, settings: Settings, runtime: Runtime, clock: FrozenClock
    ) -> None:
        await active(runtime)
        short = settings.model_copy(update={"access_token_max_lifetime_seconds": 60})
        rotation = await rotate(runtime, short)
        assert rotation.previous_publish_until == clock.now() + timedelta(
            seconds=60 + keys.RETIREMENT_LEEWAY.total_seconds()
        )

    async def test_revoke_previous_removes_every_previous_key_at_once(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        first = await active(runtime)
        second = (await rotate(runtime)).key
        third = await rotate(runtime, revoke_previous=True)
        assert sorted(third.revoked_kids) == sorted([first.kid, second.kid])
        assert third.previous_publish_until is None
        assert await published_kids(client) == [third.key.kid]
        stored = await rows(runtime)
        for kid in (first.kid, second.kid):
            assert stored[kid].status == "revoked"
            assert stored[kid].revoked_at == clock.now()
        assert (await active(runtime)).kid == third.key.kid

    async def test_the_first_rotation_of_an_empty_registry_creates_the_key(
        self, runtime: Runtime
    ) -> None:
        rotation = await rotate(runtime)
        assert rotation.previous_kid is None
        assert rotation.revoked_kids == []
        assert (await active(runtime)).kid == rotation.key.kid

    async def test_the_algorithm_defaults_to_the_setting(
        self, settings: Settings, runtime: Runtime
    ) -> None:
        rotation = await rotate(runtime, settings.model_copy(update={"signing_algorithm": "RS256"}))
        assert rotation.key.alg == "RS256"
        assert (await active(runtime)).alg == "RS256"

    async def test_private_halves_never_reach_the_published_set(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await rotate(runtime, algorithm="RS256")
        await rotate(runtime, algorithm="Ed25519")
        for key in (await client.get("/.well-known/jwks.json")).json()["keys"]:
            assert not {"d", "p", "q", "dp", "dq", "qi"} & key.keys()


class TestKeysRevokedHook:
    async def test_runs_in_the_rotation_transaction_with_the_revoked_kids(
        self, runtime: Runtime, recorder: RevokedKidsRecorder
    ) -> None:
        first = await active(runtime)
        second = (await rotate(runtime)).key
        assert recorder.calls == []  # a plain rotation revokes nothing
        third = await rotate(runtime, revoke_previous=True)
        assert recorder.calls == [third.revoked_kids]
        assert recorder.statuses_seen == [{first.kid: "revoked", second.kid: "revoked"}]

    async def test_a_handler_that_fails_rolls_the_rotation_back(
        self, client: httpx.AsyncClient, runtime: Runtime, recorder: RevokedKidsRecorder
    ) -> None:
        old = await active(runtime)
        recorder.fail = True
        with pytest.raises(RuntimeError, match="refused"):
            await rotate(runtime, revoke_previous=True)
        assert (await active(runtime)).kid == old.kid
        assert await published_kids(client) == [old.kid]
        assert [row.status for row in (await rows(runtime)).values()] == ["active"]


class TestAudit:
    async def test_rotation_and_each_revocation_are_audited_on_the_platform_chain(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        first = await active(runtime)
        second = (await rotate(runtime)).key
        third = await rotate(runtime, revoke_previous=True)
        listed = await client.get("/v1/audit", params={"limit": 200}, headers=ADMIN)
        events = [e for e in listed.json()["items"] if e["action"].startswith("signing_key.")]
        rotated = [e for e in events if e["action"] == "signing_key.rotated"]
        assert {e["target"] for e in rotated} == {second.kid, third.key.kid}
        (last,) = [e for e in rotated if e["target"] == third.key.kid]
        assert last["org_id"] is None
        assert last["details"]["previous_kid"] == second.kid
        assert sorted(last["details"]["revoked_kids"]) == sorted([first.kid, second.kid])
        revoked = {e["target"] for e in events if e["action"] == "signing_key.revoked"}
        assert revoked == {first.kid, second.kid}
        verified = await client.get("/v1/audit/verify", headers=ADMIN)
        assert verified.json()["verified"] is True

    async def test_outbox_events_are_written_with_the_change(self, runtime: Runtime) -> None:
        await active(runtime)
        rotation = await rotate(runtime, revoke_previous=True)
        async with runtime.database.read_only() as session:
            found = (await session.execute(select(OutboxEvent))).scalars().all()
        types = sorted((e.type, e.subject) for e in found if e.type.startswith("signing_key."))
        assert types == sorted(
            [("signing_key.rotated", rotation.key.kid)]
            + [("signing_key.revoked", kid) for kid in rotation.revoked_kids]
        )
