"""The audit log: written with each change, hash-chained, append-only, tamper-evident, redacted."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tabard.audit import service
from tabard.audit.chain import verify_events
from tabard.audit.jobs import check_chain_once
from tabard.audit.redaction import REDACTED, redact
from tabard.audit.service import AuditFilter
from tabard.core import metrics
from tabard.core.context import SYSTEM, Context
from tabard.core.runtime import Runtime
from tests.conftest import ADMIN, bearer, create_org, create_org_key


@asynccontextmanager
async def triggers_off(runtime: Runtime) -> AsyncIterator[None]:
    """Let a test tamper like an attacker with database access (PostgreSQL is shared: restore)."""
    postgres = runtime.database.dialect == "postgresql"
    async with runtime.database.unit_of_work() as session:
        if postgres:
            await session.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        else:
            for verb in ("update", "delete"):
                await session.execute(text(f"DROP TRIGGER audit_events_no_{verb}"))
    try:
        yield
    finally:
        if postgres:
            async with runtime.database.unit_of_work() as session:
                await session.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))


async def tamper(runtime: Runtime, statement: str, event_id: str) -> None:
    async with triggers_off(runtime), runtime.database.unit_of_work() as session:
        await session.execute(text(statement), {"id": event_id})


class TestRecording:
    async def test_each_change_writes_one_event_with_actor_and_request_id(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post(
            "/v1/orgs",
            json={"id": "acme", "display_name": "Acme"},
            headers={**ADMIN, "X-Request-ID": "req-42"},
        )
        assert response.headers["x-request-id"] == "req-42"
        events = (await client.get("/v1/audit?org=acme", headers=ADMIN)).json()["items"]
        assert len(events) == 1
        event = events[0]
        assert event["action"] == "org.created"
        assert event["outcome"] == "success"
        assert event["actor_kind"] == "platform_admin"
        assert event["org_id"] == "acme"
        assert event["request_id"] == "req-42"

    async def test_failed_change_writes_no_success_event(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await client.post("/v1/orgs", json={"id": "acme", "display_name": "Again"}, headers=ADMIN)
        events = (await client.get("/v1/audit?org=acme", headers=ADMIN)).json()["items"]
        assert [event["action"] for event in events] == ["org.created"]

    async def test_filters_and_single_read(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        await client.post("/v1/orgs/acme/suspend", headers=ADMIN)
        page = (
            await client.get("/v1/audit", params={"action": "org.suspended"}, headers=ADMIN)
        ).json()
        assert [event["org_id"] for event in page["items"]] == ["acme"]
        event_id = page["items"][0]["id"]
        single = await client.get(f"/v1/audit/{event_id}", headers=ADMIN)
        assert single.json()["action"] == "org.suspended"
        assert (await client.get("/v1/audit/nope", headers=ADMIN)).status_code == 404

    async def test_a_time_filter_without_a_time_zone_is_422(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get(
            "/v1/audit", params={"since": "2026-01-01T00:00:00"}, headers=ADMIN
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "query.since"


class TestChain:
    async def test_verify_passes_on_an_untouched_log(self, client: httpx.AsyncClient) -> None:
        for slug in ("acme", "globex"):
            await create_org(client, slug)
            await create_org_key(client, slug)
        result = (await client.get("/v1/audit/verify", headers=ADMIN)).json()
        # 4 org events, and the platform event of setting the admin secret at boot.
        assert result == {"verified": True, "checked": 5, "first_broken_id": None}

    async def test_each_org_has_its_own_chain(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        await create_org_key(client, "acme")
        events = (await client.get("/v1/audit", headers=ADMIN)).json()["items"]
        acme = sorted((e for e in events if e["chain_id"] == "acme"), key=lambda e: e["chain_seq"])
        assert [e["chain_seq"] for e in acme] == [1, 2]
        assert acme[0]["prev_hash"] == "0" * 64
        assert acme[1]["prev_hash"] == acme[0]["hash"]

    async def test_database_refuses_update_and_delete(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        for statement in ("UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events"):
            with pytest.raises(DBAPIError, match="append-only"):
                async with runtime.database.unit_of_work() as session:
                    await session.execute(text(statement))

    async def test_edited_row_is_named_by_verify(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        await create_org_key(client, "acme")
        await client.post("/v1/orgs/acme/suspend", headers=ADMIN)
        events = (await client.get("/v1/audit", headers=ADMIN)).json()["items"]
        victim = next(event for event in events if event["action"] == "org.api_key.created")
        await tamper(
            runtime, "UPDATE audit_events SET outcome = 'denied' WHERE id = :id", victim["id"]
        )
        result = (await client.get("/v1/audit/verify", headers=ADMIN)).json()
        assert result["verified"] is False
        assert result["first_broken_id"] == victim["id"]

    async def test_deleted_row_breaks_the_chain(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        await create_org_key(client, "acme")
        await client.post("/v1/orgs/acme/suspend", headers=ADMIN)
        events = (await client.get("/v1/audit?org=acme", headers=ADMIN)).json()["items"]
        _, second, third, *_ = sorted(events, key=lambda e: e["chain_seq"])
        await tamper(runtime, "DELETE FROM audit_events WHERE id = :id", second["id"])
        result = (await client.get("/v1/audit/verify", headers=ADMIN)).json()
        assert result["first_broken_id"] == third["id"]

    async def test_deleted_tail_is_caught_by_the_chain_head(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        await create_org_key(client, "acme")
        events = (await client.get("/v1/audit?org=acme", headers=ADMIN)).json()["items"]
        newest = max(events, key=lambda e: e["chain_seq"])
        await tamper(runtime, "DELETE FROM audit_events WHERE id = :id", newest["id"])
        assert (await client.get("/v1/audit/verify", headers=ADMIN)).json()["verified"] is False

    async def test_org_key_may_not_verify_the_platform(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        key = await create_org_key(client, "acme")
        assert (await client.get("/v1/audit/verify", headers=bearer(key))).status_code == 403


class TestExport:
    async def test_export_verifies_offline_and_detects_tampering(
        self, client: httpx.AsyncClient, tmp_path: Path
    ) -> None:
        await create_org(client, "acme")
        await create_org_key(client, "acme")
        export = await client.get("/v1/audit/export?org=acme", headers=ADMIN)
        assert export.headers["content-type"].startswith("application/x-ndjson")
        lines = export.text.splitlines()
        assert len(lines) == 2
        good = tmp_path / "audit.ndjson"
        good.write_text(export.text)
        ok = _cli("audit", "verify", str(good))
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["verified"] is True

        forged = [json.loads(line) for line in lines]
        forged[1]["details"] = {"key_id": "someone-else"}
        bad = tmp_path / "forged.ndjson"
        bad.write_text("\n".join(json.dumps(event) for event in forged))
        broken = _cli("audit", "verify", str(bad))
        assert broken.returncode == 1
        assert json.loads(broken.stdout)["first_broken_id"] == forged[1]["id"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tabard.cli", *args], capture_output=True, text=True, timeout=60
    )


class TestRedaction:
    def test_credentials_are_redacted_whatever_their_key(self) -> None:
        details = {
            "note": "tbd_org_" + "a" * 43,
            "auth": "Bearer abc.def",
            "jwt": "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
            "pem": "-----BEGIN PRIVATE KEY-----\nMIIE...",
            "nested": [{"admin": "tbd_admin_" + "b" * 43}],
        }
        redacted = redact(details)
        assert redacted == {
            "note": REDACTED,
            "auth": REDACTED,
            "jwt": REDACTED,
            "pem": REDACTED,
            "nested": [{"admin": REDACTED}],
        }

    def test_ordinary_values_stay(self) -> None:
        details = {"tokenCount": 1234, "token": "not-a-secret", "secret_name": "prod", "n": 1.5}
        assert redact(details) == details

    async def test_secrets_never_reach_the_stored_event(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        secret = await create_org_key(client, "acme")
        export = (await client.get("/v1/audit/export", headers=ADMIN)).text
        assert secret not in export


class TestBackgroundCheck:
    async def test_gauge_follows_the_chain(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        assert await check_chain_once(runtime.database) is True
        assert metrics.REGISTRY.get_sample_value("tabard_audit_chain_intact") == 1
        event = (await client.get("/v1/audit", headers=ADMIN)).json()["items"][0]
        await tamper(runtime, "UPDATE audit_events SET action = 'x' WHERE id = :id", event["id"])
        assert await check_chain_once(runtime.database) is False
        scraped = (await client.get("/metrics")).text
        assert "tabard_audit_chain_intact 0.0" in scraped


class TestConcurrentWriters:
    async def test_concurrent_requests_of_many_orgs_keep_every_chain_intact(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        orgs = [f"org-{index}" for index in range(4)]
        await asyncio.gather(*(create_org(client, org) for org in orgs))
        responses = await asyncio.gather(
            *(
                client.post(f"/v1/orgs/{org}/keys", json={"name": f"k{i}"}, headers=ADMIN)
                for i in range(10)
                for org in orgs
            )
        )
        assert {response.status_code for response in responses} == {201}
        result = (await client.get("/v1/audit/verify", headers=ADMIN)).json()
        assert result == {"verified": True, "checked": 45, "first_broken_id": None}
        exported = [e async for e in service.export(runtime.database, AuditFilter(), batch_size=7)]
        assert len(exported) == 45  # 44 org events and the boot-time admin secret event
        assert verify_events(exported).verified
        for org in orgs:
            chain = [event["chain_seq"] for event in exported if event["chain_id"] == org]
            assert chain == list(range(1, 12))


class TestRecordBatch:
    async def test_a_batch_continues_each_org_chain_and_verifies(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await create_org(client, "acme")
        await create_org(client, "globex")
        ctx = Context(SYSTEM, runtime.clock)
        entries = [
            service.AuditEntry(
                ctx, "test.batched", org, details={"n": n, "secret": "tbd_cs_0123456789abcdef0123"}
            )
            for n, org in enumerate(["acme", "globex", "acme", None, "acme"])
        ]
        async with runtime.database.unit_of_work() as session:
            await service.record_batch(session, entries)
        async with runtime.database.unit_of_work() as session:
            await service.record(session, ctx, action="test.after", org_id="acme")
        assert (await service.verify(runtime.database)).verified is True
        events = (await client.get("/v1/audit?org=acme&limit=200", headers=ADMIN)).json()["items"]
        acme = sorted(events, key=lambda event: event["chain_seq"])
        assert [event["action"] for event in acme[-4:]] == ["test.batched"] * 3 + ["test.after"]
        assert [event["details"]["n"] for event in acme[-4:-1]] == [0, 2, 4]
        assert all(event["details"]["secret"] == REDACTED for event in acme[-4:-1])
        seqs = [event["chain_seq"] for event in acme]
        assert seqs == list(range(1, len(seqs) + 1))
