"""GET /v1/events: an org's (or, for the admin, every) published event as Server-Sent Events,
in publish order, resumable from any event id.

`follow=false` streams are read through the ASGI app (the test relays by hand, so it decides
what is published); `follow=true` streams are read from uvicorn on loopback in this process,
whose own relay publishes as commits happen, as a client of a deployment sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from httpx_sse import ServerSentEvent, aconnect_sse
from sqlalchemy import select

from tabard.api.app import build_runtime, create_app
from tabard.core.config import Settings
from tabard.core.outbox import OutboxEvent
from tabard.core.runtime import Runtime
from tabard.events import routes
from tabard.events.service import Events
from tabard.tenancy.authentication import ensure_admin_secret
from tests.conftest import ADMIN, ADMIN_SECRET, bearer, create_agent, create_org, create_org_key
from tests.support.server import free_port
from tests.tokens.support import access_token, agent_client

EVENTS = "/v1/events"
ENVELOPE = {"id", "type", "org", "time", "subject", "data"}
LIVE_SECONDS = 2.0  # how soon a following client sees an event after the commit


async def frames(
    client: httpx.AsyncClient, headers: dict[str, str] = ADMIN, **params: Any
) -> list[ServerSentEvent]:
    """The frames of a `follow=false` stream (200 asserted)."""
    params.setdefault("follow", "false")
    async with aconnect_sse(client, "GET", EVENTS, params=params, headers=headers) as source:
        assert source.response.status_code == 200, await source.response.aread()
        return [frame async for frame in source.aiter_sse()]


async def envelopes(
    client: httpx.AsyncClient, headers: dict[str, str] = ADMIN, **params: Any
) -> list[dict[str, Any]]:
    """The envelopes of a `follow=false` stream, each checked against its frame's id and event."""
    envelopes = []
    for frame in await frames(client, headers, **params):
        if not frame.data:  # the position a stream that starts at the end announces
            continue
        envelope: dict[str, Any] = json.loads(frame.data)
        assert (frame.id, frame.event) == (envelope["id"], envelope["type"]), frame
        envelopes.append(envelope)
    return envelopes


def names(events: list[dict[str, Any]]) -> list[str]:
    """The agent names of agent events, in stream order."""
    return [event["data"]["agent_name"] for event in events]


async def agents(client: httpx.AsyncClient, *agent_names: str, org_id: str = "acme") -> None:
    for name in agent_names:
        await create_agent(client, org_id, name)


async def published_agents(
    client: httpx.AsyncClient, events: Events, *agent_names: str, org_id: str = "acme"
) -> list[dict[str, Any]]:
    """These agents of `org_id` (made by the caller), relayed; their `agent.created` envelopes,
    read as the admin."""
    await agents(client, *agent_names, org_id=org_id)
    await events.relay()
    created = await envelopes(client, type="agent.created", org=org_id, last=len(agent_names))
    assert names(created) == list(agent_names)
    return created


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


class TestStartingPoint:
    async def test_a_new_stream_starts_at_the_end(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await create_org(client, "acme")
        await agents(client, "a", "b")
        await events.relay()
        newest = (await envelopes(client, last=1))[0]

        started = await frames(client)

        # No event, only where to resume: the newest event's id, without data.
        assert [(frame.id, frame.data) for frame in started] == [(newest["id"], "")]

    async def test_a_new_stream_announces_only_a_matching_position(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await create_org(client, "acme")
        await agents(client, "a")
        await events.relay()
        created = (await envelopes(client, type="agent.created", last=1))[0]

        assert [frame.id for frame in await frames(client, type="agent.created")] == [created["id"]]
        assert await frames(client, type="credential.revoked") == []

    async def test_last_starts_that_many_events_back(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await create_org(client, "acme")
        await agents(client, "a", "b", "c", "d")
        await events.relay()
        assert names(await envelopes(client, last=3)) == ["b", "c", "d"]

    async def test_last_counts_only_the_matching_events(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await create_org(client, "acme")
        await agents(client, "a", "b")
        await create_org_key(client, "acme")  # newer, but not an agent event
        await events.relay()
        shown = await envelopes(client, last=2, type="agent.*")
        assert [event["type"] for event in shown] == ["agent.created", "agent.created"]
        assert names(shown) == ["a", "b"]

    async def test_last_beyond_the_history_shows_all_of_it(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await create_org(client, "acme")
        await agents(client, "a")
        await events.relay()
        shown = await envelopes(client, last=1000)
        assert [event["type"] for event in shown] == ["org.created", "agent.created"]

    async def test_last_above_1000_is_refused(self, client: httpx.AsyncClient) -> None:
        response = await client.get(EVENTS, params={"follow": "false", "last": 1001}, headers=ADMIN)
        assert response.status_code == 422, response.text


class TestResuming:
    async def test_after_resumes_strictly_after_that_event(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await create_org(client, "acme")
        created = await published_agents(client, events, "a", "b", "c", "d")
        shown = await envelopes(client, after=created[1]["id"])
        assert names(shown) == ["c", "d"]

    async def test_last_event_id_resumes_strictly_after_that_event(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await create_org(client, "acme")
        created = await published_agents(client, events, "a", "b", "c")
        shown = await envelopes(client, {**ADMIN, "Last-Event-ID": created[0]["id"]})
        assert names(shown) == ["b", "c"]

    async def test_resuming_sees_what_was_published_since_once_each(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await create_org(client, "acme")
        first = await published_agents(client, events, "a", "b")
        await agents(client, "c", "d")
        await events.relay()
        resumed = await envelopes(client, {**ADMIN, "Last-Event-ID": first[-1]["id"]})
        assert names(resumed) == ["c", "d"]
        again = await envelopes(client, {**ADMIN, "Last-Event-ID": resumed[-1]["id"]})
        assert again == []

    async def test_the_header_wins_over_the_query(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await create_org(client, "acme")
        created = await published_agents(client, events, "a", "b", "c")
        shown = await envelopes(
            client, {**ADMIN, "Last-Event-ID": created[1]["id"]}, after=created[0]["id"]
        )
        assert names(shown) == ["c"]

    async def test_a_filtered_stream_resumes_after_an_event_it_did_not_show(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await create_org(client, "acme")
        await agents(client, "a")
        key = await client.post("/v1/orgs/acme/keys", json={"name": "ci"}, headers=ADMIN)
        await agents(client, "b")
        await events.relay()
        [key_created] = await envelopes(client, type="org.api_key.created", last=1)
        assert key_created["data"]["key_id"] == key.json()["id"]
        shown = await envelopes(client, type="agent.*", after=key_created["id"])
        assert names(shown) == ["b"]

    async def test_an_unknown_last_event_id_is_refused(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await create_org(client, "acme")
        await events.relay()
        unknown = "0190f5c8-0000-7000-8000-000000000000"
        response = await client.get(
            EVENTS, params={"follow": "false"}, headers={**ADMIN, "Last-Event-ID": unknown}
        )
        assert_problem(response, 400, "INVALID_LAST_EVENT_ID")

    async def test_an_unknown_after_is_refused(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            EVENTS, params={"follow": "false", "after": "not-an-event"}, headers=ADMIN
        )
        assert_problem(response, 400, "INVALID_LAST_EVENT_ID")

    async def test_an_unpublished_event_id_is_refused(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        [event_id] = await outbox_ids(runtime)  # org.created, not relayed yet
        response = await client.get(
            EVENTS, params={"follow": "false"}, headers={**ADMIN, "Last-Event-ID": event_id}
        )
        assert_problem(response, 400, "INVALID_LAST_EVENT_ID")

    async def test_another_orgs_event_id_is_refused_like_an_unknown_one(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        key = bearer(await create_org_key(client, "acme"))
        theirs = await published_agents(client, events, "spy-target", org_id="globex")
        response = await client.get(
            EVENTS, params={"follow": "false"}, headers={**key, "Last-Event-ID": theirs[0]["id"]}
        )
        assert_problem(response, 400, "INVALID_LAST_EVENT_ID")
        unknown = await client.get(
            EVENTS,
            params={"follow": "false"},
            headers={**key, "Last-Event-ID": "0190f5c8-0000-7000-8000-000000000000"},
        )
        assert unknown.json()["title"] == response.json()["title"]
        assert "globex" not in response.text
        via_query = await client.get(
            EVENTS, params={"follow": "false", "after": theirs[0]["id"]}, headers=key
        )
        assert_problem(via_query, 400, "INVALID_LAST_EVENT_ID")


async def outbox_ids(runtime: Runtime) -> list[str]:
    async with runtime.database.read_only() as session:
        statement = select(OutboxEvent.id).order_by(OutboxEvent.sequence)
        return list((await session.execute(statement)).scalars())


class TestFrames:
    async def test_a_frame_is_the_event_id_its_type_and_its_envelope(
        self, client: httpx.AsyncClient, events: Events, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        agent = await create_agent(client, "acme", "invoice-bot")
        await events.relay()
        async with aconnect_sse(
            client, "GET", EVENTS, params={"follow": "false", "last": 1}, headers=ADMIN
        ) as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            [frame] = [frame async for frame in source.aiter_sse()]
        envelope = json.loads(frame.data)
        assert set(envelope) == ENVELOPE
        async with runtime.database.read_only() as session:
            row = (
                await session.execute(select(OutboxEvent).where(OutboxEvent.id == frame.id))
            ).scalar_one()
        assert frame.event == "agent.created"
        assert envelope == {
            "id": row.id,
            "type": "agent.created",
            "org": "acme",
            "time": row.occurred_at.isoformat().replace("+00:00", "Z"),
            "subject": agent["id"],
            "data": row.data,
        }
        assert envelope["time"].endswith("Z")
        assert envelope["data"]["agent_id"] == agent["id"]
        assert envelope["data"]["agent_name"] == "invoice-bot"

    async def test_events_come_in_publish_order(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await create_org(client, "acme")
        await agents(client, "a", "b")
        await events.relay()
        await agents(client, "c")
        await create_org_key(client, "acme")
        await agents(client, "d")
        await events.relay()
        shown = await envelopes(client, last=1000)
        assert [event["type"] for event in shown] == [
            "org.created",
            "agent.created",
            "agent.created",
            "agent.created",
            "org.api_key.created",
            "agent.created",
        ]
        assert [event["data"].get("agent_name") for event in shown] == [
            None,
            "a",
            "b",
            "c",
            None,
            "d",
        ]
        assert len({event["id"] for event in shown}) == len(shown)


class TestPublication:
    async def test_events_not_yet_relayed_are_not_shown(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await create_org(client, "acme")
        await agents(client, "a")
        await events.relay()
        await agents(client, "b")  # committed, not yet published
        assert names(await envelopes(client, last=10, type="agent.*")) == ["a"]
        await events.relay()
        assert names(await envelopes(client, last=10, type="agent.*")) == ["a", "b"]


class TestTypeFilter:
    async def published_mix(self, client: httpx.AsyncClient, events: Events) -> None:
        """org.created, two agent.created, token.revoked and agent.suspended (the suspension),
        org.api_key.created; relayed."""
        await create_org(client, "acme")
        agent = await create_agent(client, "acme", "a")
        await create_agent(client, "acme", "b")
        suspended = await client.post(
            f"/v1/orgs/acme/agents/{agent['id']}/suspend", json={}, headers=ADMIN
        )
        assert suspended.status_code == 200, suspended.text
        await create_org_key(client, "acme")
        await events.relay()

    async def types_shown(self, client: httpx.AsyncClient, *patterns: str) -> list[str]:
        shown = await envelopes(client, last=1000, type=list(patterns))
        return [event["type"] for event in shown]

    async def test_a_family_pattern_matches_every_type_under_it(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await self.published_mix(client, events)
        assert await self.types_shown(client, "agent.*") == [
            "agent.created",
            "agent.created",
            "agent.suspended",
        ]
        assert await self.types_shown(client, "org.api_key.*") == ["org.api_key.created"]

    async def test_an_exact_type_matches_only_itself(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await self.published_mix(client, events)
        assert await self.types_shown(client, "agent.suspended") == ["agent.suspended"]

    async def test_repeated_types_match_any_of_them(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await self.published_mix(client, events)
        assert await self.types_shown(client, "agent.suspended", "org.*") == [
            "org.created",
            "agent.suspended",
            "org.api_key.created",
        ]

    async def test_a_star_matches_everything(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await self.published_mix(client, events)
        assert await self.types_shown(client, "*") == await self.types_shown(client)
        assert {"org.created", "agent.suspended", "token.revoked"} <= set(
            await self.types_shown(client, "*")
        )

    async def test_a_malformed_pattern_is_refused(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            EVENTS, params={"follow": "false", "type": "Agent Created"}, headers=ADMIN
        )
        assert response.status_code == 422, response.text


class TestWhoSeesWhat:
    async def two_orgs_and_the_platform(self, client: httpx.AsyncClient, events: Events) -> None:
        """acme and globex with an agent each, and a platform event (a signing key rotation)."""
        await create_org(client, "acme")
        await create_org(client, "globex")
        await create_agent(client, "acme", "acme-bot")
        await create_agent(client, "globex", "globex-bot")
        rotated = await client.post("/v1/admin/signing-keys/rotate", json={}, headers=ADMIN)
        assert rotated.status_code in (200, 201), rotated.text
        await events.relay()

    async def test_an_org_key_sees_only_its_own_orgs_events(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await self.two_orgs_and_the_platform(client, events)
        key = bearer(await create_org_key(client, "acme"))
        await events.relay()
        shown = await envelopes(client, key, last=1000)
        assert {event["org"] for event in shown} == {"acme"}
        assert [event["type"] for event in shown] == [
            "org.created",
            "agent.created",
            "org.api_key.created",
        ]
        assert await envelopes(client, key, last=1000, org="acme") == shown

    async def test_an_org_key_naming_another_org_is_told_it_does_not_exist(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await self.two_orgs_and_the_platform(client, events)
        key = bearer(await create_org_key(client, "acme"))
        response = await client.get(
            EVENTS, params={"follow": "false", "org": "globex"}, headers=key
        )
        assert_problem(response, 404, "ORG_NOT_FOUND")
        ghost = await client.get(EVENTS, params={"follow": "false", "org": "ghost"}, headers=key)
        assert ghost.json()["title"] == response.json()["title"]

    async def test_the_admin_sees_every_org_and_the_platform(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await self.two_orgs_and_the_platform(client, events)
        shown = await envelopes(client, last=1000)
        assert {event["org"] for event in shown} == {"acme", "globex", None}
        platform = [event for event in shown if event["org"] is None]
        assert "signing_key.rotated" in {event["type"] for event in platform}

    async def test_the_admin_may_pick_one_org(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await self.two_orgs_and_the_platform(client, events)
        shown = await envelopes(client, last=1000, org="globex")
        assert [(event["org"], event["type"]) for event in shown] == [
            ("globex", "org.created"),
            ("globex", "agent.created"),
        ]

    async def test_the_admin_naming_an_unknown_org_is_told_so(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get(
            EVENTS, params={"follow": "false", "org": "ghost"}, headers=ADMIN
        )
        assert_problem(response, 404, "ORG_NOT_FOUND")

    async def test_an_agent_access_token_is_forbidden(
        self, client: httpx.AsyncClient, events: Events
    ) -> None:
        await create_org(client, "acme")
        agent = await agent_client(client, "acme", "bot", create_org_too=False)
        token = await access_token(client, agent)
        await events.relay()
        response = await client.get(EVENTS, params={"follow": "false"}, headers=bearer(token))
        assert_problem(response, 403, "NOT_PERMITTED")
        own_org = await client.get(
            EVENTS, params={"follow": "false", "org": "acme", "last": 10}, headers=bearer(token)
        )
        assert_problem(own_org, 403, "NOT_PERMITTED")

    async def test_no_credentials_are_unauthenticated(self, client: httpx.AsyncClient) -> None:
        response = await client.get(EVENTS, params={"follow": "false"})
        assert_problem(response, 401, "UNAUTHENTICATED")

    async def test_a_wrong_secret_is_unauthenticated(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            EVENTS, params={"follow": "false"}, headers=bearer("tbd_key_not-a-real-key")
        )
        assert response.status_code == 401, response.text


# Following, against a real server -------------------------------------------------------------


@dataclass
class Reader:
    """Reads a following stream in the background into `frames`, as a client would.

    httpx-sse yields each keep-alive ping after the first event as a frame with no data (it
    keeps the last id, where the SSE spec dispatches nothing): like `tabard events`, a client
    skips those (`pings` counts them)."""

    frames: list[ServerSentEvent] = field(default_factory=list)
    pings: int = 0
    status: int | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self, http: httpx.AsyncClient, headers: dict[str, str], params: Any) -> None:
        async with aconnect_sse(http, "GET", EVENTS, params=params, headers=headers) as source:
            self.status = source.response.status_code
            self.connected.set()
            async for frame in source.aiter_sse():
                if not frame.data:
                    self.pings += 1
                    continue
                self.frames.append(frame)
                self.arrived.set()

    async def until(self, count: int, seconds: float = LIVE_SECONDS) -> list[ServerSentEvent]:
        """The first `count` frames, once they arrived within `seconds`."""
        deadline = time.monotonic() + seconds
        while len(self.frames) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(self.frames)} of {count} frames within {seconds} s"
            self.arrived.clear()
            if len(self.frames) < count:  # none came between the check and the clear
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), timeout=left)
        return self.frames[:count]


def agent_names(frames: list[ServerSentEvent]) -> list[str]:
    return [json.loads(frame.data)["data"]["agent_name"] for frame in frames]


@dataclass
class Deployment:
    url: str
    http: httpx.AsyncClient

    async def agent(self, name: str) -> None:
        response = await self.http.post("/v1/orgs/acme/agents", json={"name": name}, headers=ADMIN)
        assert response.status_code == 201, response.text

    @contextlib.asynccontextmanager
    async def follow(self, headers: dict[str, str] = ADMIN, **params: Any) -> AsyncIterator[Reader]:
        """A following stream read in the background on its own connection; on exit the client
        disconnects."""
        reader = Reader()
        timeout = httpx.Timeout(10, read=None)
        async with httpx.AsyncClient(base_url=self.url, timeout=timeout, trust_env=False) as http:
            task = asyncio.create_task(reader.read(http, headers, {"follow": "true", **params}))
            try:
                await asyncio.wait_for(reader.connected.wait(), timeout=10)
                assert reader.status == 200
                yield reader
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def published(http: httpx.AsyncClient, count: int) -> None:
    """Wait until the server's own relay has published `count` events."""
    for _ in range(100):
        if len(await frames(http, last=count)) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} events published")


@pytest.fixture
async def deployment(settings: Settings) -> AsyncIterator[Deployment]:
    """The app under uvicorn on a loopback port of this process, lifespan on: its relay
    publishes at each commit, as in production."""
    port = free_port()
    runtime = build_runtime(settings)
    async with runtime.database.unit_of_work() as session:
        await ensure_admin_secret(session, ADMIN_SECRET, runtime.clock)
    app = create_app(settings, runtime=runtime)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    for _ in range(600):
        if server.started:
            break
        await asyncio.sleep(0.05)  # uvicorn offers no event to wait on
    assert server.started, "the server did not start"
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, timeout=10, trust_env=False) as http:
        created = await http.post(
            "/v1/orgs", json={"id": "acme", "display_name": "Acme"}, headers=ADMIN
        )
        assert created.status_code == 201, created.text
        await published(http, 1)  # so that a new stream starts after org.created
        yield Deployment(url, http)
    server.should_exit = True
    await serving


class TestFollowing:
    async def test_a_new_stream_shows_the_events_that_happen_from_then_on(
        self, deployment: Deployment
    ) -> None:
        async with deployment.follow() as reader:  # org.created was before: not shown
            for count, name in enumerate(["a", "b", "c"], start=1):
                started = time.monotonic()
                await deployment.agent(name)
                await reader.until(count)
                assert time.monotonic() - started < LIVE_SECONDS
        assert [frame.event for frame in reader.frames] == ["agent.created"] * 3
        assert agent_names(reader.frames) == ["a", "b", "c"]

    async def test_a_reconnect_gets_exactly_what_it_missed_then_live_events(
        self, deployment: Deployment
    ) -> None:
        async with deployment.follow(type="agent.*") as reader:
            await deployment.agent("seen-1")
            await deployment.agent("seen-2")
            seen = await reader.until(2)
        last_seen = seen[-1].id
        for name in ("missed-1", "missed-2", "missed-3"):
            await deployment.agent(name)
        headers = {**ADMIN, "Last-Event-ID": last_seen}
        async with deployment.follow(headers, type="agent.*") as reader:
            missed = await reader.until(3)
            assert agent_names(missed) == ["missed-1", "missed-2", "missed-3"]
            await deployment.agent("live-1")
            await reader.until(4)
            await asyncio.sleep(0.5)  # anything shown twice would be here by now
            assert agent_names(reader.frames) == [
                "missed-1",
                "missed-2",
                "missed-3",
                "live-1",
            ]
        ids = [frame.id for frame in [*seen, *reader.frames]]
        assert len(set(ids)) == len(ids)

    async def test_keep_alive_pings_are_comments_between_events(
        self, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(routes, "_PING_SECONDS", 0.1)  # 15 s in production
        params = {"follow": "true", "type": "agent.*"}
        lines: list[str] = []
        async with deployment.http.stream("GET", EVENTS, params=params, headers=ADMIN) as raw:
            async for line in raw.aiter_lines():
                lines.append(line)
                if sum(line.startswith(":") for line in lines) == 3:
                    break
        assert all(line.startswith(": ping") or line == "" for line in lines), lines

    async def test_a_client_reading_across_pings_sees_only_the_events(
        self, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(routes, "_PING_SECONDS", 0.1)
        async with deployment.follow(type="agent.*") as reader:
            await asyncio.sleep(0.5)  # several pings go by
            await deployment.agent("first")
            await reader.until(1)
            pings_before = reader.pings
            for _ in range(100):  # pings after an event reach the client (as data-less frames)
                if reader.pings >= pings_before + 3:
                    break
                await asyncio.sleep(0.05)
            assert reader.pings >= pings_before + 3
            await deployment.agent("second")
            await reader.until(2)
        assert agent_names(reader.frames) == ["first", "second"]
        assert [frame.event for frame in reader.frames] == ["agent.created"] * 2
