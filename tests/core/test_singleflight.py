"""SingleFlight: concurrent loads of one key share a single call, its result and its failure."""

from __future__ import annotations

import asyncio

import pytest

from tabard.core.singleflight import SingleFlight


class Loader:
    """Counts its calls and holds each one open until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def load(self, value: str = "loaded") -> str:
        self.calls += 1
        await self.release.wait()
        return value

    async def fail(self) -> str:
        self.calls += 1
        await self.release.wait()
        raise LookupError("the database said no")


async def started(*awaitables: object) -> list[asyncio.Task[str]]:
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]  # type: ignore[arg-type]
    await asyncio.sleep(0)  # every caller has reached the flight
    return tasks


class TestSingleFlight:
    async def test_concurrent_callers_of_one_key_share_one_call(self) -> None:
        flights: SingleFlight[str, str] = SingleFlight()
        loader = Loader()
        tasks = await started(*(flights.run("org-a", loader.load) for _ in range(20)))
        loader.release.set()
        assert await asyncio.gather(*tasks) == ["loaded"] * 20
        assert loader.calls == 1

    async def test_different_keys_load_separately(self) -> None:
        flights: SingleFlight[str, str] = SingleFlight()
        loader = Loader()
        tasks = await started(
            flights.run("org-a", lambda: loader.load("a")),
            flights.run("org-b", lambda: loader.load("b")),
        )
        loader.release.set()
        assert await asyncio.gather(*tasks) == ["a", "b"]
        assert loader.calls == 2

    async def test_a_landed_call_is_not_reused(self) -> None:
        flights: SingleFlight[str, str] = SingleFlight()
        loader = Loader()
        loader.release.set()
        assert await flights.run("org-a", loader.load) == "loaded"
        assert await flights.run("org-a", loader.load) == "loaded"
        assert loader.calls == 2
        assert flights.in_flight() == 0

    async def test_every_waiter_gets_the_failure_and_the_next_call_retries(self) -> None:
        flights: SingleFlight[str, str] = SingleFlight()
        loader = Loader()
        tasks = await started(*(flights.run("org-a", loader.fail) for _ in range(3)))
        loader.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert [type(result) for result in results] == [LookupError] * 3
        assert await flights.run("org-a", loader.load) == "loaded"
        assert loader.calls == 2

    async def test_a_cancelled_caller_leaves_the_call_running_for_the_others(self) -> None:
        flights: SingleFlight[str, str] = SingleFlight()
        loader = Loader()
        leaver, stayer = await started(
            flights.run("org-a", loader.load), flights.run("org-a", loader.load)
        )
        leaver.cancel()
        await asyncio.sleep(0)
        loader.release.set()
        assert await stayer == "loaded"
        with pytest.raises(asyncio.CancelledError):
            await leaver
        assert loader.calls == 1
