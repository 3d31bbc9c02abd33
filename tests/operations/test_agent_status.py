"""GET /v1/orgs/{org}/agents/{agent}/status, and the presence transitions announced for webhooks.

Presence is computed on read from the stored instances merged with this process's unflushed
beats; `announce_presence` (one leader's job) records `agent.online` / `agent.offline`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tabard.core.clock import FrozenClock
from tabard.core.runtime import Runtime
from tests.conftest import ADMIN, bearer, create_org, create_org_key
from tests.operations.heartbeat_support import (
    Agent,
    agent_status,
    audit_events,
    beat,
    enrolled_agent,
    operations_of,
    outbox_events,
    stored_instances,
)


def seen_at(status: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(status["last_seen_at"])


class TestStatusAccess:
    async def test_the_orgs_key_reads_the_status(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        key = await create_org_key(client, "acme")
        status = await agent_status(client, agent, bearer(key))
        assert status["agent_id"] == agent.id

    async def test_the_platform_admin_reads_the_status(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        assert (await agent_status(client, agent, ADMIN))["agent_id"] == agent.id

    async def test_another_orgs_key_is_not_found(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent)
        await create_org(client, "globex")
        response = await client.get(
            agent.status_url, headers=bearer(await create_org_key(client, "globex"))
        )
        assert response.status_code == 404, response.text
        assert agent.id not in response.text

    async def test_the_agent_itself_is_not_permitted(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        response = await client.get(agent.status_url, headers=agent.headers)
        assert response.status_code == 403, response.text

    async def test_an_unknown_agent_is_not_found(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        response = await client.get("/v1/orgs/acme/agents/nobody/status", headers=ADMIN)
        assert response.status_code == 404, response.text


class TestPresence:
    async def test_an_agent_that_never_beat_is_never_seen(self, client: httpx.AsyncClient) -> None:
        status = await agent_status(client, await enrolled_agent(client))
        assert status["presence"] == "never_seen"
        assert (status["last_seen_at"], status["online_instances"], status["instances"]) == (
            None,
            0,
            [],
        )

    async def test_a_beat_is_online_before_any_flush(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent)
        status = await agent_status(client, agent)
        assert (status["presence"], status["online_instances"]) == ("online", 1)
        assert seen_at(status) == clock.now()

    async def test_the_agent_stays_online_after_the_flush(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent)
        await operations_of(client).flush_heartbeats()
        assert len(operations_of(client).heartbeats) == 0  # read from the database only
        status = await agent_status(client, agent)
        assert (status["presence"], seen_at(status)) == ("online", clock.now())

    async def test_the_agent_is_online_at_the_threshold(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent)
        await operations_of(client).flush_heartbeats()
        clock.advance(90)
        assert (await agent_status(client, agent))["presence"] == "online"

    async def test_the_agent_is_offline_past_the_threshold(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent)
        await operations_of(client).flush_heartbeats()
        beaten_at = clock.now()
        clock.advance(91)
        status = await agent_status(client, agent)
        assert (status["presence"], status["online_instances"]) == ("offline", 0)
        assert seen_at(status) == beaten_at
        assert status["instances"][0]["presence"] == "offline"

    @pytest.mark.parametrize("overrides", [{"agent_offline_threshold_seconds": 10}], ids=["10s"])
    async def test_the_threshold_setting_moves_the_offline_point(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent)
        clock.advance(10)
        assert (await agent_status(client, agent))["presence"] == "online"
        clock.advance(1)
        assert (await agent_status(client, agent))["presence"] == "offline"


class TestInstances:
    async def test_instances_are_listed_newest_first_with_their_presence(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        ops = operations_of(client)
        await beat(client, agent, "i-old")
        await ops.flush_heartbeats()
        clock.advance(60)
        await beat(client, agent, "i-mid")
        await ops.flush_heartbeats()
        clock.advance(40)
        await beat(client, agent, "i-new")  # not flushed
        status = await agent_status(client, agent)
        listed = [(item["instance_id"], item["presence"]) for item in status["instances"]]
        assert listed == [("i-new", "online"), ("i-mid", "online"), ("i-old", "offline")]
        assert (status["online_instances"], seen_at(status)) == (2, clock.now())

    async def test_an_instance_shows_its_latest_beat(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent, hostname="a", version="1", sdk_version="0.1", status={"q": 1})
        await operations_of(client).flush_heartbeats()
        first = clock.now()
        clock.advance(20)
        await beat(client, agent, hostname="b", version="2", sdk_version="0.2", status={"q": 2})
        [instance] = (await agent_status(client, agent))["instances"]
        assert {key: instance[key] for key in ("hostname", "version", "sdk_version")} == {
            "hostname": "b",
            "version": "2",
            "sdk_version": "0.2",
        }
        assert instance["status"] == {"q": 2}
        assert datetime.fromisoformat(instance["first_seen_at"]) == first
        assert datetime.fromisoformat(instance["last_seen_at"]) == clock.now()

    async def test_first_seen_stays_after_later_flushes(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        ops = operations_of(client)
        await beat(client, agent)
        await ops.flush_heartbeats()
        first = clock.now()
        clock.advance(30)
        await beat(client, agent)
        await ops.flush_heartbeats()
        [instance] = (await agent_status(client, agent))["instances"]
        assert datetime.fromisoformat(instance["first_seen_at"]) == first
        assert datetime.fromisoformat(instance["last_seen_at"]) == first + timedelta(seconds=30)

    @pytest.mark.parametrize("flushed", [False, True], ids=["buffered", "stored"])
    async def test_a_skew_beyond_30_seconds_is_flagged(
        self, client: httpx.AsyncClient, clock: FrozenClock, flushed: bool
    ) -> None:
        agent = await enrolled_agent(client)
        for instance_id, seconds in (("i-45", 45), ("i-30", 30), ("i-ahead", -31)):
            agent_clock = (clock.now() - timedelta(seconds=seconds)).isoformat()
            await beat(client, agent, instance_id, clock=agent_clock)
        if flushed:
            await operations_of(client).flush_heartbeats()
        instances = (await agent_status(client, agent))["instances"]
        skews = {
            item["instance_id"]: (item["clock_skew_seconds"], item["clock_skewed"])
            for item in instances
        }
        assert skews == {
            "i-45": (pytest.approx(45), True),
            "i-30": (pytest.approx(30), False),
            "i-ahead": (pytest.approx(-31), True),
        }


class TestLifecycle:
    async def test_a_new_agent_is_active(self, client: httpx.AsyncClient) -> None:
        assert (await agent_status(client, await enrolled_agent(client)))["lifecycle"] == "active"

    async def test_a_suspended_agent_shows_it_beside_its_presence(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent)
        suspended = await client.post(
            f"/v1/orgs/acme/agents/{agent.id}/suspend", json={}, headers=ADMIN
        )
        assert suspended.status_code == 200, suspended.text
        status = await agent_status(client, agent)
        assert (status["lifecycle"], status["presence"]) == ("suspended", "online")


class TestPresenceTransitions:
    async def announced(self, client: httpx.AsyncClient) -> list[tuple[str, str]]:
        """(action, target) of the presence audit events, oldest first."""
        events = [
            *await audit_events(client, "agent.online"),
            *await audit_events(client, "agent.offline"),
        ]
        return [(e["action"], e["target"]) for e in sorted(events, key=lambda e: e["sequence"])]

    async def online_agent(self, client: httpx.AsyncClient) -> Agent:
        """An agent whose beat is flushed and whose coming online was announced."""
        agent = await enrolled_agent(client)
        await beat(client, agent)
        ops = operations_of(client)
        await ops.flush_heartbeats()
        assert await ops.announce_presence() == 1
        return agent

    async def test_coming_online_is_announced_once(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await self.online_agent(client)
        [event] = await audit_events(client, "agent.online")
        assert (event["target"], event["actor_kind"]) == (agent.id, "system")
        assert event["details"] == {"agent_id": agent.id, "last_seen_at": clock.now().isoformat()}

    async def test_unflushed_beats_are_not_announced(self, client: httpx.AsyncClient) -> None:
        await beat(client, await enrolled_agent(client))
        assert await operations_of(client).announce_presence() == 0
        assert await self.announced(client) == []

    async def test_staying_online_announces_nothing(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await self.online_agent(client)
        ops = operations_of(client)
        for _ in range(3):
            clock.advance(60)
            await beat(client, agent)
            await ops.flush_heartbeats()
            assert await ops.announce_presence() == 0
        assert await self.announced(client) == [("agent.online", agent.id)]

    async def test_going_offline_is_announced_once_past_the_threshold(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await self.online_agent(client)
        ops = operations_of(client)
        clock.advance(90)
        assert await ops.announce_presence() == 0
        clock.advance(1)
        assert await ops.announce_presence() == 1
        clock.advance(600)
        assert await ops.announce_presence() == 0
        assert await self.announced(client) == [
            ("agent.online", agent.id),
            ("agent.offline", agent.id),
        ]

    async def test_beating_again_is_announced_as_online(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await self.online_agent(client)
        ops = operations_of(client)
        clock.advance(91)
        await ops.announce_presence()
        clock.advance(100)
        await beat(client, agent)
        await ops.flush_heartbeats()
        assert await ops.announce_presence() == 1
        assert [action for action, _ in await self.announced(client)] == [
            "agent.online",
            "agent.offline",
            "agent.online",
        ]

    async def test_each_agent_is_announced_on_its_own(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        first = await self.online_agent(client)
        clock.advance(60)
        second = await enrolled_agent(client, "globex", "other-bot")
        await beat(client, second)
        ops = operations_of(client)
        await ops.flush_heartbeats()
        clock.advance(31)  # past the first agent's threshold only
        assert await ops.announce_presence() == 2
        assert await self.announced(client) == [
            ("agent.online", first.id),
            ("agent.offline", first.id),
        ]
        assert [e["target"] for e in await audit_events(client, "agent.online", "globex")] == [
            second.id
        ]

    async def test_transitions_are_in_the_outbox_for_webhooks(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        agent = await self.online_agent(client)
        online_seen = clock.now()
        ops = operations_of(client)
        clock.advance(91)
        await ops.announce_presence()
        clock.advance(5)
        await beat(client, agent)
        await ops.flush_heartbeats()
        await ops.announce_presence()
        await ops.announce_presence()
        events = await outbox_events(runtime, "agent.online", "agent.offline")
        assert [(e["type"], e["org_id"], e["subject"]) for e in events] == [
            ("agent.online", "acme", agent.id),
            ("agent.offline", "acme", agent.id),
            ("agent.online", "acme", agent.id),
        ]
        assert events[1]["data"] == {"agent_id": agent.id, "last_seen_at": online_seen.isoformat()}


class TestReplicas:
    async def test_a_beat_on_one_replica_shows_on_the_other_after_its_flush(
        self, client: httpx.AsyncClient, replica: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent, hostname="from-first")
        assert (await agent_status(replica, agent))["presence"] == "never_seen"
        await operations_of(client).flush_heartbeats()
        status = await agent_status(replica, agent)
        assert (status["presence"], seen_at(status)) == ("online", clock.now())
        assert status["instances"][0]["hostname"] == "from-first"

    async def test_beats_on_both_replicas_add_up(
        self, client: httpx.AsyncClient, replica: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent)
        await beat(replica, agent)
        await beat(replica, agent)
        await operations_of(replica).flush_heartbeats()
        await operations_of(client).flush_heartbeats()
        [row] = await stored_instances(runtime)
        assert (row["instance_id"], row["heartbeats"]) == ("i-1", 3)

    async def test_an_older_beat_flushed_late_does_not_replace_a_newer_one(
        self, client: httpx.AsyncClient, replica: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent, hostname="old", version="1.0", status={"n": 1})
        clock.advance(30)
        await beat(replica, agent, hostname="new", version="2.0", status={"n": 2})
        await operations_of(replica).flush_heartbeats()
        await operations_of(client).flush_heartbeats()  # the older beat arrives last
        [instance] = (await agent_status(replica, agent))["instances"]
        assert datetime.fromisoformat(instance["last_seen_at"]) == clock.now()
        assert (instance["hostname"], instance["version"], instance["status"]) == (
            "new",
            "2.0",
            {"n": 2},
        )
