"""POST /v1/agent/heartbeat: who may beat, what a beat may carry, and how beats are written.

Beats are absorbed in the process's buffer and written by a flush; the tests flush through the
app's own `Operations` instead of waiting for the background job.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tabard.api.app import create_app
from tabard.core import metrics
from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tabard.core.runtime import Runtime
from tests.conftest import ADMIN, bearer, create_org_key
from tests.operations.heartbeat_support import (
    HEARTBEAT_URL,
    Agent,
    audit_events,
    beat,
    enrolled_agent,
    operations_of,
    stored_instances,
)

# `{"x":"` and `"}` around the padding: a status of exactly this many bytes of compact JSON.
_STATUS_FRAME_BYTES = 8
_MAX_STATUS_BYTES = 4096


def status_of_size(size: int) -> dict[str, str]:
    return {"x": "a" * (size - _STATUS_FRAME_BYTES)}


def assert_invalid(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "VALIDATION_FAILED"
    assert [error["field"] for error in problem["errors"]] == [field]


class TestHeartbeatAccessLog:
    """Accepted beats log at debug (thousands a second would drown the log); refusals at info."""

    async def test_an_accepted_beat_writes_no_access_line_at_info(
        self, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
    ) -> None:
        agent = await enrolled_agent(client)
        capsys.readouterr()

        accepted = await client.post(
            HEARTBEAT_URL, json={"instance_id": "i-1"}, headers=agent.headers
        )
        refused = await client.post(HEARTBEAT_URL, json={"instance_id": "i-1"})
        listed = await client.get("/v1/orgs/acme/agents", headers=ADMIN)

        assert (accepted.status_code, refused.status_code, listed.status_code) == (200, 401, 200)
        logged = capsys.readouterr()
        lines = [line for line in (logged.out + logged.err).splitlines() if "latency_ms" in line]
        assert [
            ("/v1/agent/heartbeat" in line, "status=401" in line or '"status": 401' in line)
            for line in lines
        ] == [(True, True), (False, False)]

    async def test_an_embedding_app_without_our_logging_setup_serves_beats_cleanly(
        self, settings: Settings, runtime: Runtime
    ) -> None:
        """`create_app` used as a library (no `configure_logging`): the quiet access line must
        not raise after the response, which the client would never see but the server logs."""
        app = create_app(settings, runtime=runtime)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://tabard.test") as http:
            agent = await enrolled_agent(http)
            response = await http.post(
                HEARTBEAT_URL, json={"instance_id": "i-1"}, headers=agent.headers
            )
        assert response.status_code == 200, response.text


class TestHeartbeatCredentials:
    async def test_the_agents_own_access_token_may_beat(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        response = await client.post(
            HEARTBEAT_URL, json={"instance_id": "i-1"}, headers=agent.headers
        )
        assert response.status_code == 200, response.text

    async def test_an_org_key_is_not_permitted(self, client: httpx.AsyncClient) -> None:
        await enrolled_agent(client)
        key = await create_org_key(client, "acme")
        response = await client.post(
            HEARTBEAT_URL, json={"instance_id": "i-1"}, headers=bearer(key)
        )
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "NOT_PERMITTED"

    async def test_the_platform_admin_is_not_permitted(self, client: httpx.AsyncClient) -> None:
        response = await client.post(HEARTBEAT_URL, json={"instance_id": "i-1"}, headers=ADMIN)
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "NOT_PERMITTED"

    async def test_no_credentials_is_unauthenticated(self, client: httpx.AsyncClient) -> None:
        response = await client.post(HEARTBEAT_URL, json={"instance_id": "i-1"})
        assert response.status_code == 401, response.text

    async def test_a_refused_beat_is_not_recorded(self, client: httpx.AsyncClient) -> None:
        await enrolled_agent(client)
        key = await create_org_key(client, "acme")
        await client.post(HEARTBEAT_URL, json={"instance_id": "i-1"}, headers=bearer(key))
        await client.post(HEARTBEAT_URL, json={"instance_id": "i-1"}, headers=ADMIN)
        assert await operations_of(client).flush_heartbeats() == 0


class TestHeartbeatBody:
    async def post(self, client: httpx.AsyncClient, agent: Agent, body: Any) -> httpx.Response:
        return await client.post(HEARTBEAT_URL, json=body, headers=agent.headers)

    async def test_instance_id_is_required(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        assert_invalid(await self.post(client, agent, {"hostname": "h"}), "body.instance_id")

    @pytest.mark.parametrize(
        "instance_id", ["", "has space", "a/b", "é", "x" * 129], ids=lambda v: repr(v[:12])
    )
    async def test_instance_id_must_match_the_pattern(
        self, client: httpx.AsyncClient, instance_id: str
    ) -> None:
        agent = await enrolled_agent(client)
        response = await self.post(client, agent, {"instance_id": instance_id})
        assert_invalid(response, "body.instance_id")

    async def test_an_instance_id_of_every_allowed_character_is_accepted(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        response = await self.post(client, agent, {"instance_id": "Pod-7_a.b:c" + "x" * 117})
        assert response.status_code == 200, response.text

    async def test_a_status_of_4096_bytes_is_accepted(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        body = {"instance_id": "i-1", "status": status_of_size(_MAX_STATUS_BYTES)}
        assert (await self.post(client, agent, body)).status_code == 200

    async def test_a_status_over_4096_bytes_is_refused(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        body = {"instance_id": "i-1", "status": status_of_size(_MAX_STATUS_BYTES + 1)}
        response = await self.post(client, agent, body)
        assert_invalid(response, "body.status")
        assert "4097 bytes" in response.json()["detail"]
        assert await operations_of(client).flush_heartbeats() == 0

    async def test_an_unknown_field_is_refused(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        response = await self.post(client, agent, {"instance_id": "i-1", "region": "eu"})
        assert_invalid(response, "body.region")

    async def test_a_clock_without_a_time_zone_is_refused(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        naive = clock.now().replace(tzinfo=None).isoformat()
        response = await self.post(client, agent, {"instance_id": "i-1", "clock": naive})
        assert_invalid(response, "body.clock")


class TestHeartbeatAck:
    async def test_the_ack_carries_the_server_time(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        ack = await beat(client, await enrolled_agent(client))
        assert datetime.fromisoformat(ack["server_time"]) == clock.now()

    async def test_an_agent_clock_45_seconds_behind_is_a_skew_of_45(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        behind = (clock.now() - timedelta(seconds=45)).isoformat()
        ack = await beat(client, await enrolled_agent(client), clock=behind)
        assert ack["clock_skew_seconds"] == pytest.approx(45)

    async def test_an_agent_clock_ahead_is_a_negative_skew(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        ahead = (clock.now() + timedelta(seconds=12.5)).isoformat()
        ack = await beat(client, await enrolled_agent(client), clock=ahead)
        assert ack["clock_skew_seconds"] == pytest.approx(-12.5)

    async def test_without_a_clock_the_skew_is_zero(self, client: httpx.AsyncClient) -> None:
        ack = await beat(client, await enrolled_agent(client))
        assert ack["clock_skew_seconds"] == 0


class TestHeartbeatFlush:
    async def test_nothing_is_written_before_a_flush(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent, hostname="h1")
        await beat(client, agent, hostname="h2")
        assert await stored_instances(runtime) == []

    async def test_a_flush_writes_the_latest_beat_with_the_number_coalesced(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent, hostname="old", version="1.0", sdk_version="0.1", status={"a": 1})
        clock.advance(1)
        await beat(client, agent, hostname="mid", version="1.1", sdk_version="0.2", status={"a": 2})
        clock.advance(1)
        behind = (clock.now() - timedelta(seconds=3)).isoformat()
        await beat(
            client,
            agent,
            hostname="new",
            version="1.2",
            sdk_version="0.3",
            clock=behind,
            status={"b": [3]},
        )
        assert await operations_of(client).flush_heartbeats() == 1
        [row] = await stored_instances(runtime)
        assert row == {
            "agent_id": agent.id,
            "instance_id": "i-1",
            "org_id": "acme",
            "hostname": "new",
            "version": "1.2",
            "sdk_version": "0.3",
            "status_data": {"b": [3]},
            "clock_skew_seconds": pytest.approx(3),
            "heartbeats": 3,
        }

    async def test_a_second_flush_adds_to_the_count(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        ops = operations_of(client)
        await beat(client, agent, hostname="first")
        await beat(client, agent, hostname="first")
        await ops.flush_heartbeats()
        clock.advance(30)
        await beat(client, agent, hostname="second")
        assert await ops.flush_heartbeats() == 1
        [row] = await stored_instances(runtime)
        assert (row["heartbeats"], row["hostname"]) == (3, "second")

    async def test_a_flush_with_nothing_new_writes_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        agent = await enrolled_agent(client)
        ops = operations_of(client)
        await beat(client, agent)
        await ops.flush_heartbeats()
        written = await stored_instances(runtime)
        assert await ops.flush_heartbeats() == 0
        assert await stored_instances(runtime) == written
        assert written[0]["heartbeats"] == 1

    async def test_two_instances_of_one_agent_are_two_rows(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent, "i-1", hostname="a")
        await beat(client, agent, "i-2", hostname="b")
        await beat(client, agent, "i-2", hostname="b")
        assert await operations_of(client).flush_heartbeats() == 2
        rows = await stored_instances(runtime)
        assert sorted((r["instance_id"], r["hostname"], r["heartbeats"]) for r in rows) == [
            ("i-1", "a", 1),
            ("i-2", "b", 2),
        ]
        assert {row["agent_id"] for row in rows} == {agent.id}

    @pytest.mark.parametrize("field", ["hostname", "version", "sdk_version"])
    async def test_a_nul_character_is_refused_and_the_flush_goes_on(
        self, client: httpx.AsyncClient, runtime: Runtime, field: str
    ) -> None:
        # Valid JSON, but no PostgreSQL text value: stored in the buffer, it would fail every
        # flush of the process, for every agent.
        agent = await enrolled_agent(client)
        other = await enrolled_agent(client, "globex", "other-bot")
        body = {"instance_id": "i-1", field: "a\x00b"}
        response = await client.post(HEARTBEAT_URL, json=body, headers=agent.headers)
        assert_invalid(response, f"body.{field}")
        await beat(client, other, "i-9", hostname="fine")
        assert await operations_of(client).flush_heartbeats() == 1
        [row] = await stored_instances(runtime)
        assert (row["instance_id"], row["hostname"]) == ("i-9", "fine")

    async def test_a_nul_character_in_the_status_is_stored(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent, status={"a\x00": "b\x00c"})
        assert await operations_of(client).flush_heartbeats() == 1
        [row] = await stored_instances(runtime)
        assert row["status_data"] == {"a\x00": "b\x00c"}


@pytest.mark.parametrize(
    "overrides",
    [{"heartbeat_rate_limit_per_second": 0.01, "heartbeat_rate_limit_burst": 2}],
    ids=["burst-2"],
)
class TestHeartbeatRateLimit:
    async def test_the_third_quick_beat_of_an_instance_is_refused(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent)
        await beat(client, agent)
        response = await client.post(
            HEARTBEAT_URL, json={"instance_id": "i-1"}, headers=agent.headers
        )
        assert response.status_code == 429, response.text
        assert response.json()["code"] == "RATE_LIMIT_EXCEEDED"
        assert int(response.headers["retry-after"]) > 0
        assert response.headers["ratelimit-policy"] == '"heartbeat";q=2;w=200'
        assert response.headers["x-ratelimit-remaining"] == "0"

    async def test_an_accepted_beat_carries_no_rate_limit_headers(
        self, client: httpx.AsyncClient
    ) -> None:
        # Nobody reads them on the fleet's hottest path; a refusal still says when to retry.
        agent = await enrolled_agent(client)
        response = await client.post(
            HEARTBEAT_URL, json={"instance_id": "i-1"}, headers=agent.headers
        )
        assert response.status_code == 200, response.text
        assert "ratelimit" not in response.headers
        assert "x-ratelimit-remaining" not in response.headers

    async def test_another_instance_of_the_same_agent_still_beats(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        for _ in range(3):
            await client.post(HEARTBEAT_URL, json={"instance_id": "i-1"}, headers=agent.headers)
        await beat(client, agent, "i-2")

    async def test_a_refused_beat_is_not_counted(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        agent = await enrolled_agent(client)
        for _ in range(3):
            await client.post(HEARTBEAT_URL, json={"instance_id": "i-1"}, headers=agent.headers)
        await operations_of(client).flush_heartbeats()
        [row] = await stored_instances(runtime)
        assert row["heartbeats"] == 2

    async def test_the_instance_beats_again_once_its_bucket_refills(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent)
        await beat(client, agent)
        clock.advance(100)  # one beat per 100 s at 0.01 per second
        await beat(client, agent)


class TestHeartbeatQuota:
    async def test_beats_do_not_use_the_orgs_daily_api_calls(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        for number in range(3):
            await beat(client, agent, f"i-{number}")
        assert await self.api_calls_used(client) == 0
        key = await create_org_key(client, "acme")
        counted = await client.get(agent.status_url, headers=bearer(key))
        assert counted.status_code == 200, counted.text
        assert await self.api_calls_used(client) == 1  # an operator's call does count

    async def api_calls_used(self, client: httpx.AsyncClient) -> int:
        response = await client.get("/v1/orgs/acme/usage", headers=ADMIN)
        assert response.status_code == 200, response.text
        [quota] = [q for q in response.json()["quotas"] if q["name"] == "api_calls_per_day"]
        used: int = quota["used"]
        return used


class TestHeartbeatAuditSampling:
    async def test_the_first_beat_of_an_instance_is_audited(
        self, client: httpx.AsyncClient
    ) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent, hostname="h", version="2.0", sdk_version="0.9")
        await beat(client, agent, hostname="h", version="2.0", sdk_version="0.9")
        assert await audit_events(client, "agent.heartbeat") == []  # not before the flush
        await operations_of(client).flush_heartbeats()
        [event] = await audit_events(client, "agent.heartbeat")
        assert (event["actor_kind"], event["actor_id"], event["target"]) == (
            "agent",
            agent.id,
            agent.id,
        )
        assert event["details"] == {
            "instance_id": "i-1",
            "hostname": "h",
            "version": "2.0",
            "sdk_version": "0.9",
            "clock_skew_seconds": 0.0,
            "heartbeats": 2,
        }

    async def test_each_instance_is_audited_on_its_own(self, client: httpx.AsyncClient) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent, "i-1")
        await beat(client, agent, "i-2")
        await operations_of(client).flush_heartbeats()
        events = await audit_events(client, "agent.heartbeat")
        assert sorted(event["details"]["instance_id"] for event in events) == ["i-1", "i-2"]

    async def test_the_audited_counter_counts_the_sampled_beats(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        def audited() -> float:
            return metrics.REGISTRY.get_sample_value("tabard_heartbeats_audited_total") or 0.0

        agent = await enrolled_agent(client)
        before = audited()
        for instance in ("i-1", "i-2", "i-1"):
            await beat(client, agent, instance)
        await operations_of(client).flush_heartbeats()
        clock.advance(30)
        await beat(client, agent, "i-1")  # within five minutes: not audited
        await operations_of(client).flush_heartbeats()
        assert audited() - before == 2
        assert (
            f"tabard_heartbeats_audited_total {before + 2}" in (await client.get("/metrics")).text
        )

    async def test_later_beats_within_five_minutes_are_not_audited(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        ops = operations_of(client)
        await beat(client, agent)
        await ops.flush_heartbeats()
        for _ in range(4):
            clock.advance(70)  # 280 s after the audited beat
            await beat(client, agent)
            await ops.flush_heartbeats()
        assert len(await audit_events(client, "agent.heartbeat")) == 1

    async def test_a_beat_five_minutes_after_the_audited_one_is_audited(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        ops = operations_of(client)
        await beat(client, agent)
        await ops.flush_heartbeats()
        clock.advance(60)
        await beat(client, agent)
        await ops.flush_heartbeats()
        clock.advance(241)
        await beat(client, agent)
        await ops.flush_heartbeats()
        events = await audit_events(client, "agent.heartbeat")
        assert [event["details"]["heartbeats"] for event in events] == [1, 1]
        newest, first = (datetime.fromisoformat(e["occurred_at"]) for e in events)
        assert newest - first == timedelta(seconds=301)

    async def test_a_restarted_server_audits_the_next_beat(
        self, client: httpx.AsyncClient, replica: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        agent = await enrolled_agent(client)
        await beat(client, agent)
        await operations_of(client).flush_heartbeats()
        clock.advance(30)
        await beat(replica, agent)
        await operations_of(replica).flush_heartbeats()
        events = await audit_events(client, "agent.heartbeat")
        assert len(events) == 2
        assert {event["details"]["instance_id"] for event in events} == {"i-1"}
