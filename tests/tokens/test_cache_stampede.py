"""A per-process cache that lapses under load is refilled by one read, not one per request.

Every request that found the org's token policy (5 s), the revocation list's freshness marker
(`revocation_sync_seconds`) or the signing keys missing used to read the database itself; under
a fleet's heartbeats each read queued behind the others and the stampede fed itself.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from tabard.core.clock import FrozenClock
from tabard.core.runtime import Runtime
from tabard.signing import service as signing
from tests.operations.heartbeat_support import HEARTBEAT_URL, enrolled_agent

CONCURRENT = 24
_FROM = re.compile(r"\bFROM\s+(\S+)", re.IGNORECASE)


@pytest.fixture
def reads(runtime: Runtime) -> Iterator[Counter[str]]:
    """SELECTs run from now on, by the table they read first."""
    counted: Counter[str] = Counter()

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        source = _FROM.search(statement)
        if statement.lstrip().upper().startswith("SELECT") and source:
            counted[source.group(1).strip('"')] += 1

    engine = runtime.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    yield counted
    event.remove(engine, "before_cursor_execute", count)


async def beats_at_once(client: httpx.AsyncClient, headers: dict[str, str]) -> list[int]:
    responses = await asyncio.gather(
        *(
            client.post(HEARTBEAT_URL, json={"instance_id": f"i-{n}"}, headers=headers)
            for n in range(CONCURRENT)
        )
    )
    return [response.status_code for response in responses]


class TestCacheStampede:
    async def test_lapsed_policy_and_revocation_marker_are_read_once_for_all(
        self, client: httpx.AsyncClient, clock: FrozenClock, reads: Counter[str]
    ) -> None:
        agent = await enrolled_agent(client)
        assert await beats_at_once(client, agent.headers) == [200] * CONCURRENT
        clock.advance(61)  # past the policy cache and the revocation list's sync interval
        reads.clear()

        assert await beats_at_once(client, agent.headers) == [200] * CONCURRENT

        assert reads["org_token_settings"] == 1
        assert reads["token_revocations"] == 1

    async def test_cold_signing_keys_are_read_once_for_all(
        self, client: httpx.AsyncClient, runtime: Runtime, reads: Counter[str]
    ) -> None:
        agent = await enrolled_agent(client)  # its token not yet verified: the keys are needed
        signing.keys_for(runtime.keystore, runtime.clock).invalidate()
        reads.clear()

        assert await beats_at_once(client, agent.headers) == [200] * CONCURRENT

        assert reads["signing_keys"] == 1
