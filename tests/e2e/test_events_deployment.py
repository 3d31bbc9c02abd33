"""Events through real `tabard serve` processes, as an operator deploys them.

On NATS JetStream two processes share PostgreSQL, Redis and NATS (a stream of the test's own,
deleted afterwards): an event committed on one streams on the other; webhooks reach the
receiver once each, though both processes send; the JetStream stream holds each event once,
under its id, as the envelope; and when the relay's leader is killed, the other process takes
the lease over and nothing is lost. On the embedded defaults (SQLite, the in-process bus) one
process streams and delivers the same way, and a restart re-delivers nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse
from nats.js.errors import NotFoundError

from tests.conftest import _truncate_postgres
from tests.support.server import Server
from tests.support.webhook_receiver import Receiver

pytestmark = pytest.mark.slow

ADMIN_SECRET = "events-admin-secret-long-enough-for-production-0123456"
ADMIN = {"Authorization": f"Bearer {ADMIN_SECRET}"}
# How long to keep listening after the expected deliveries, so a duplicate would show.
SETTLE_SECONDS = 2.0
# The relay's lease lapses 15 s after its leader's last renewal (renewed every 5 s), and the
# other process tries to take it every 5 s: a dead leader is replaced within about 20 s.
FAILOVER_SECONDS = 30.0


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """What every process of one deployment shares (and a bounded graceful shutdown)."""
    return {
        "TABARD_ADMIN_SECRET": ADMIN_SECRET,
        "TABARD_SECRET_KEY": "events-secret-key-shared-by-every-replica-0123456",
        "TABARD_MASTER_KEY": "events-master-key-shared-by-every-replica-0123456",
        "TABARD_SHUTDOWN_GRACE_SECONDS": "5",
        **(extra or {}),
    }


class NatsDeployment:
    """Processes sharing PostgreSQL, Redis and NATS, on a JetStream stream of their own."""

    def __init__(
        self, shared: dict[str, str], stream: str, prefix: str, root: pytest.TempPathFactory
    ) -> None:
        self.shared = shared
        self.stream = stream
        self.prefix = prefix
        self.root = root
        self.servers: list[Server] = []

    def start(self, name: str) -> Server:
        server = Server(self.root.mktemp(name), extra_env=_env(self.shared))
        self.servers.append(server)
        return server

    def stop(self) -> None:
        for server in reversed(self.servers):
            if server.process.poll() is None:
                server.stop()
            else:
                server.wait()


async def _stream_holding(nats_url: str, subjects: str) -> str | None:
    """The stream that already holds `subjects`, if any (JetStream allows only one)."""
    client = await nats.connect(nats_url)
    try:
        for info in await client.jetstream().streams_info():
            if subjects in (info.config.subjects or []):
                return str(info.config.name)
        return None
    finally:
        await client.close()


async def _delete_stream(nats_url: str, stream: str) -> None:
    client = await nats.connect(nats_url)
    try:
        with contextlib.suppress(NotFoundError):  # the processes never got to create it
            await client.jetstream().delete_stream(stream)
    finally:
        await client.close()


@pytest.fixture
def nats_deployment(
    migrated_postgres: str,
    redis_url: str,
    nats_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[NatsDeployment]:
    asyncio.run(_truncate_postgres(migrated_postgres))
    # A stream and subjects of this run's own: JetStream lets one stream hold a subject, so
    # runs (and other deployments) sharing the server never collide.
    run = uuid.uuid4().hex[:12]
    prefix = f"tabard_e2e_{run}"
    holder = asyncio.run(_stream_holding(nats_url, f"{prefix}.>"))
    if holder is not None:
        pytest.fail(f"the NATS stream {holder!r} already holds {prefix}.>: delete it first")
    shared = {
        "TABARD_DATABASE_URL": migrated_postgres,
        "TABARD_KV_BACKEND": "redis",
        "TABARD_REDIS_URL": redis_url,
        "TABARD_BUS_BACKEND": "nats",
        "TABARD_NATS_URL": nats_url,
        "TABARD_BUS_STREAM": f"TABARD_E2E_{run}",
        "TABARD_BUS_SUBJECTS_PREFIX": prefix,
    }
    deployment = NatsDeployment(shared, shared["TABARD_BUS_STREAM"], prefix, tmp_path_factory)
    try:
        yield deployment
    finally:
        deployment.stop()
        asyncio.run(_delete_stream(nats_url, deployment.stream))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


class EventStream:
    """`GET /v1/events` (following) on one server, read in the background into `events`."""

    def __init__(self, server: Server, headers: dict[str, str], **params: Any) -> None:
        self.server = server
        self.headers = headers
        self.params = params
        self.events: list[ServerSentEvent] = []
        self._exits = contextlib.AsyncExitStack()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventStream:
        try:
            await self._connect()
        except BaseException:
            await self._exits.aclose()
            raise
        return self

    async def _connect(self) -> None:
        # Streams are quiet for long stretches (15 s between pings): no read timeout.
        timeout = httpx.Timeout(10, read=None)
        http = await self._exits.enter_async_context(httpx.AsyncClient(timeout=timeout))
        source = await self._exits.enter_async_context(
            aconnect_sse(
                http,
                "GET",
                f"{self.server.url}/v1/events",
                params=self.params,
                headers=self.headers,
            )
        )
        # The stream's start was fixed before the headers were sent: events committed from
        # here on are shown.
        assert source.response.status_code == 200, await source.response.aread()
        self._reader = asyncio.create_task(self._read(source.aiter_sse()))

    async def _read(self, frames: AsyncIterator[ServerSentEvent]) -> None:
        async for frame in frames:
            if frame.event != "message":  # a keep-alive comment carries no event
                self.events.append(frame)

    async def wait_for(self, count: int, seconds: float = 5.0) -> list[ServerSentEvent]:
        """The first `count` events, once they arrived within `seconds`."""
        deadline = time.monotonic() + seconds
        while len(self.events) < count:
            assert self._reader is not None
            if self._reader.done():
                self._reader.result()  # the stream's error, if it ended with one
                raise AssertionError(f"the stream ended after {len(self.events)} events")
            assert time.monotonic() < deadline, (
                f"{len(self.events)} of {count} events streamed from {self.server.url}: "
                f"{[event.event for event in self.events]}"
            )
            await asyncio.sleep(0.02)
        return self.events[:count]

    async def __aexit__(self, *exc_info: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._exits.aclose()


async def backlog(server: Server, org: str) -> list[ServerSentEvent]:
    """Every published event of `org` so far, in publish order (a stream that does not follow)."""
    async with (
        httpx.AsyncClient(timeout=10) as http,
        aconnect_sse(
            http,
            "GET",
            f"{server.url}/v1/events",
            params={"org": org, "last": 1000, "follow": "false"},
            headers=ADMIN,
        ) as source,
    ):
        assert source.response.status_code == 200, await source.response.aread()
        return [frame async for frame in source.aiter_sse() if frame.event != "message"]


class Api:
    """The admin's client of one server."""

    def __init__(self, server: Server) -> None:
        self.http = httpx.AsyncClient(base_url=server.url, headers=ADMIN, timeout=30)

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, path, **kwargs)
        assert response.status_code in (200, 201), (method, path, response.text)
        return response.json()

    async def org(self, org: str) -> None:
        # `pro`: room for more agents than the free tier's ten.
        await self.ok("POST", "/v1/orgs", json={"id": org, "display_name": org, "tier": "pro"})

    async def org_key(self, org: str) -> str:
        key = await self.ok("POST", f"/v1/orgs/{org}/keys", json={"name": "events"})
        return str(key["secret"])

    async def agent(self, org: str, name: str) -> str:
        agent = await self.ok("POST", f"/v1/orgs/{org}/agents", json={"name": name})
        return str(agent["id"])

    async def webhook(self, org: str, receiver: Receiver) -> str:
        """A subscription of `org`'s agent events to `receiver`, which learns its secret."""
        subscription = await self.ok(
            "POST",
            f"/v1/orgs/{org}/webhooks",
            json={"url": receiver.url, "event_types": ["agent.*"]},
        )
        receiver.secrets.append(subscription["secret"])
        return str(subscription["id"])

    async def deliveries(self, org: str, subscription_id: str) -> list[dict[str, Any]]:
        page = await self.ok(
            "GET", f"/v1/orgs/{org}/webhooks/{subscription_id}/deliveries", params={"limit": 200}
        )
        items: list[dict[str, Any]] = page["items"]
        return items

    async def aclose(self) -> None:
        await self.http.aclose()


@contextlib.asynccontextmanager
async def apis(*servers: Server) -> AsyncIterator[list[Api]]:
    clients = [Api(server) for server in servers]
    try:
        yield clients
    finally:
        for client in clients:
            await client.aclose()


def created_agents(frames: list[ServerSentEvent]) -> list[str]:
    """The agents whose `agent.created` the frames show, in order; each frame is consistent."""
    agents = []
    for frame in frames:
        event = frame.json()
        assert (frame.id, frame.event) == (event["id"], event["type"]), frame
        if event["type"] == "agent.created":
            agents.append(event["data"]["agent_id"])
    return agents


async def delivered_once(receiver: Receiver, agents: list[str]) -> None:
    """The receiver got, and verified, exactly one `agent.created` per agent and nothing else."""
    await receiver.wait_for(len(agents), seconds=15)
    await asyncio.sleep(SETTLE_SECONDS)  # a second copy, from either sender, would arrive now
    received = list(receiver.received)
    duplicates = {id_: n for id_, n in Counter(item.id for item in received).items() if n > 1}
    assert not duplicates, f"delivered more than once: {duplicates}"
    assert all(item.verified_by == receiver.secrets for item in received), received
    assert all(item.id == item.event["id"] for item in received)
    assert {item.event["type"] for item in received} == {"agent.created"}
    assert sorted(item.event["data"]["agent_id"] for item in received) == sorted(agents)


class TestNatsDeployment:
    async def test_an_event_committed_on_one_process_streams_on_the_other(
        self, nats_deployment: NatsDeployment
    ) -> None:
        a, b = nats_deployment.start("a"), nats_deployment.start("b")
        async with apis(a, b) as (api_a, api_b):
            await api_a.org("acme")
            key = await api_a.org_key("acme")
            org_key = {"Authorization": f"Bearer {key}"}
            async with (
                EventStream(b, org_key, type="agent.*") as on_b,
                EventStream(a, ADMIN, org="acme", type="agent.*") as on_a,
            ):
                first = await api_a.agent("acme", "first-bot")
                seen = await on_b.wait_for(1)
                second = await api_b.agent("acme", "second-bot")
                seen_on_b = await on_b.wait_for(2)
                seen_on_a = await on_a.wait_for(2)
                await asyncio.sleep(SETTLE_SECONDS)
                assert len(on_b.events) == len(on_a.events) == 2, "an event streamed twice"
            stored = await backlog(b, "acme")
        assert created_agents(seen) == [first]
        assert created_agents(seen_on_b) == [first, second]
        assert [frame.id for frame in seen_on_a] == [frame.id for frame in seen_on_b]
        assert created_agents(stored) == [first, second]
        ids = [frame.id for frame in stored]
        assert len(ids) == len(set(ids)), f"an event was published twice: {ids}"
        assert seen_on_b[0].json()["org"] == "acme"

    async def test_webhooks_reach_the_receiver_once_though_both_processes_send(
        self, nats_deployment: NatsDeployment, receiver: Receiver
    ) -> None:
        a, b = nats_deployment.start("a"), nats_deployment.start("b")
        async with apis(a, b) as (api_a, api_b):
            await api_a.org("acme")
            subscription = await api_b.webhook("acme", receiver)
            agents = await asyncio.gather(
                *((api_a, api_b)[n % 2].agent("acme", f"bot-{n}") for n in range(20))
            )
            await delivered_once(receiver, list(agents))
            deliveries = await api_a.deliveries("acme", subscription)
        assert len(deliveries) == 20
        assert {(item["status"], item["attempts"]) for item in deliveries} == {("succeeded", 1)}
        assert {item["event_id"] for item in deliveries} == set(receiver.ids())

    async def test_the_stream_holds_each_event_once_under_its_id(
        self, nats_deployment: NatsDeployment, nats_url: str, receiver: Receiver
    ) -> None:
        a, b = nats_deployment.start("a"), nats_deployment.start("b")
        async with apis(a, b) as (api_a, api_b):
            await api_a.org("acme")
            await api_a.webhook("acme", receiver)
            agents = [await api_a.agent("acme", "one-bot"), await api_b.agent("acme", "two-bot")]
            await delivered_once(receiver, agents)
            published = await backlog(a, "acme")
        client = await nats.connect(nats_url)
        try:
            jetstream = client.jetstream()
            info = await jetstream.stream_info(nats_deployment.stream)
            prefix = nats_deployment.prefix
            assert info.config.subjects == [f"{prefix}.>"]
            everything = await _fetch_all(jetstream, nats_deployment.stream, f"{prefix}.acme.>")
            created = await _fetch_all(
                jetstream, nats_deployment.stream, f"{prefix}.acme.agent.created"
            )
        finally:
            await client.close()
        # Once each, in publish order: what the org's stream (from the database) shows.
        assert [message.headers["Nats-Msg-Id"] for message in everything] == [
            frame.id for frame in published
        ]
        for message, frame in zip(everything, published, strict=True):
            event = json.loads(message.data)
            assert event == frame.json()
            assert message.subject == f"{prefix}.acme.{event['type']}"
        bodies = {item.id: item.body for item in receiver.received}
        assert [json.loads(message.data)["data"]["agent_id"] for message in created] == agents
        for message in created:
            assert message.subject == f"{prefix}.acme.agent.created"
            # The very bytes a webhook carries (and its signature covers).
            assert message.data == bodies[message.headers["Nats-Msg-Id"]]

    async def test_a_killed_relay_leader_is_replaced_and_nothing_is_lost(
        self, nats_deployment: NatsDeployment, receiver: Receiver
    ) -> None:
        a = nats_deployment.start("a")
        async with apis(a) as (api_a,):
            await api_a.org("acme")
            subscription = await api_a.webhook("acme", receiver)
            # Alone, `a` takes the relay's lease; it relays and sends these itself.
            before = [await api_a.agent("acme", f"before-{n}") for n in range(3)]
            await receiver.wait_for(len(before))
            await _recorded(api_a, subscription, len(before))
        b = nats_deployment.start("b")
        async with apis(b) as (api_b,), EventStream(b, ADMIN, org="acme", type="agent.*") as on_b:
            a.process.kill()  # SIGKILL: the lease is not given up, it has to lapse
            a.wait()
            killed_at = time.monotonic()
            after = [await api_b.agent("acme", f"after-{n}") for n in range(3)]
            streamed = await on_b.wait_for(len(after), seconds=FAILOVER_SECONDS)
            waited = time.monotonic() - killed_at
            await delivered_once(receiver, before + after)
            deliveries = await api_b.deliveries("acme", subscription)
        assert created_agents(streamed) == after
        # The premise: `a` held the lease, and `b` did not relay until it lapsed.
        assert waited > 5, f"relayed {waited:.1f} s after the kill: `a` did not hold the lease"
        assert {(item["status"], item["attempts"]) for item in deliveries} == {("succeeded", 1)}
        assert len(deliveries) == len(before + after)


async def _fetch_all(jetstream: Any, stream: str, subject: str) -> list[Any]:
    """Every message of the stream on `subject`, through an ephemeral pull consumer."""
    subscription = await jetstream.pull_subscribe(subject, stream=stream)
    messages: list[Any] = []
    try:
        # Nothing more within the wait: nats raises its TimeoutError or the builtin one.
        with contextlib.suppress(TimeoutError):
            while True:
                messages.extend(await subscription.fetch(100, timeout=1))
    finally:
        await subscription.unsubscribe()
    return messages


async def _recorded(api: Api, subscription: str, count: int) -> None:
    """Wait until `count` deliveries are recorded as succeeded (none left in flight)."""
    deadline = time.monotonic() + 10
    while True:
        deliveries = await api.deliveries("acme", subscription)
        if sum(item["status"] == "succeeded" for item in deliveries) == count:
            return
        assert time.monotonic() < deadline, deliveries
        await asyncio.sleep(0.1)


class TestEmbeddedDeployment:
    async def test_one_process_streams_and_delivers_and_a_restart_delivers_nothing_again(
        self, tmp_path: Path, receiver: Receiver
    ) -> None:
        server = Server(tmp_path, extra_env=_env())
        try:
            async with apis(server) as (api,):
                await api.org("acme")
                await api.webhook("acme", receiver)
            async with (
                apis(server) as (api,),
                EventStream(server, ADMIN, org="acme", type="agent.*") as stream,
            ):
                before = [await api.agent("acme", f"bot-{n}") for n in range(3)]
                streamed = await stream.wait_for(len(before))
                await delivered_once(receiver, before)
            assert created_agents(streamed) == before
            assert server.stop() == 0
            server = Server(tmp_path, extra_env=_env())
            resume = {**ADMIN, "Last-Event-ID": streamed[-1].id}
            async with (
                apis(server) as (api,),
                EventStream(server, resume, org="acme", type="agent.*") as stream,
            ):
                after = await api.agent("acme", "bot-after-restart")
                resumed = await stream.wait_for(1)
                await delivered_once(receiver, [*before, after])
                assert len(stream.events) == 1, "the stream showed an event again"
            assert created_agents(resumed) == [after]
        finally:
            if server.process.poll() is None:
                server.stop()
