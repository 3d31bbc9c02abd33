"""The event catalogue: every event Tabard emits is a catalogued type whose `data` has the
members the catalogue promises (checked on the outbox after driving the API through the flows
that emit them), docs/events.md names every type, GET /v1/event-types lists them, and the
type patterns mean the same in Python (`matches`) and in SQL (`type_filter`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi import FastAPI
from joserfc.jwk import OKPKey
from jsonschema import Draft202012Validator
from sqlalchemy import select

from tabard.core.clock import FrozenClock
from tabard.core.outbox import OutboxEvent, emit
from tabard.core.runtime import Runtime
from tabard.events import catalogue
from tabard.events.service import Events
from tabard.operations.service import Operations
from tabard.pki import jobs as pki_jobs
from tests.conftest import ADMIN, bearer, create_agent, create_org
from tests.events.conftest import deliver, subscribe
from tests.pki.support import TestCa, csr_pem, ec_key, pem, self_signed, spiffe_id
from tests.support.webhook_receiver import Receiver
from tests.tokens.support import access_token, agent_client

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"
MIN_TYPES_COVERED = 25


class Api:
    """The admin's (or a given principal's) calls, each with the status it must answer."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def call(
        self,
        method: str,
        path: str,
        status: int = 200,
        headers: dict[str, str] = ADMIN,
        **kwargs: Any,
    ) -> Any:
        response = await self.client.request(method, path, headers=headers, **kwargs)
        assert response.status_code == status, (method, path, response.text)
        return response.json() if response.content else None


# Flows: each drives one domain through the API the way its own suite does ----------------------


async def tenancy_flows(api: Api) -> None:
    """org created, updated, suspended, reactivated, deleted; org keys created and revoked;
    token, trust and PKI settings changed."""
    await api.call("PATCH", "/v1/orgs/acme", json={"display_name": "Acme Corp"})
    key = await api.call("POST", "/v1/orgs/acme/keys", 201, json={"name": "ops"})
    await api.call("DELETE", f"/v1/orgs/acme/keys/{key['id']}", 204)
    await api.call("PATCH", "/v1/orgs/acme/token-settings", json={"require_dpop": False})
    await api.call("PATCH", "/v1/orgs/acme/trust-settings", json={"binding_required": False})
    await api.call(
        "PATCH", "/v1/orgs/acme/pki-settings", json={"certificate_lifetime_seconds": 2 * 86400}
    )
    await create_org(api.client, "initech")
    await api.call("POST", "/v1/orgs/initech/suspend")
    await api.call("POST", "/v1/orgs/initech/reactivate")
    await api.call("DELETE", "/v1/orgs/initech", 204)


async def registry_flows(api: Api) -> None:
    """agent created, updated, keys added and revoked, suspended, reactivated, decommissioned."""
    agent = await create_agent(api.client, "acme", "lifecycle-bot")
    url = f"/v1/orgs/acme/agents/{agent['id']}"
    await api.call("PATCH", url, json={"description": "moves money"})
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    jwk = OKPKey.import_key(public).as_dict(private=False)
    key = await api.call("POST", f"{url}/keys", 201, json={"jwk": jwk})
    await api.call("DELETE", f"{url}/keys/{key['kid']}")
    await api.call("POST", f"{url}/suspend", json={})
    await api.call("POST", f"{url}/reactivate", json={})
    await api.call("POST", f"{url}/decommission", json={})


async def credential_flows(api: Api) -> None:
    """credential created, updated, rotated, revoked; tokens revoked by the org and by the
    client itself (RFC 7009)."""
    bot = await agent_client(api.client, "acme", "cred-bot", create_org_too=False)
    url = f"/v1/orgs/acme/agents/{bot.agent['id']}/credentials/{bot.credential_id}"
    await api.call("PATCH", url, json={"name": "renamed"})
    rotated = await api.call("POST", f"{url}/rotate", json={"grace_period_seconds": 0})
    token_bot = await agent_client(api.client, "acme", "token-bot", create_org_too=False)
    token = await access_token(api.client, token_bot)
    await api.call("POST", "/oauth2/revoke", headers=token_bot.basic, data={"token": token})
    await api.call(
        "POST",
        "/v1/orgs/acme/token-revocations",
        201,
        json={"kind": "agent", "value": token_bot.agent["id"]},
    )
    assert rotated["client_secret"] != bot.secret
    await api.call("POST", f"{url}/revoke", json={})


async def signing_flows(api: Api) -> None:
    """The platform's signing key rotated, then rotated with the previous one revoked."""
    await api.call("POST", "/v1/admin/signing-keys/rotate", json={})
    await api.call("POST", "/v1/admin/signing-keys/rotate", json={"revoke_previous": True})


async def pki_flows(api: Api, clock: FrozenClock, runtime: Runtime) -> None:
    """CAs generated, uploaded and replaced; certificates issued, registered, self-signed,
    pinned, unpinned, revoked, and announced as expiring."""
    agent = await create_agent(api.client, "acme", "cert-bot")
    url = f"/v1/orgs/acme/agents/{agent['id']}"
    generated = await api.call("POST", "/v1/orgs/acme/cas", 201, json={"source": "generate"})
    org_ca = TestCa(clock.now())
    await api.call(
        "POST", "/v1/orgs/acme/cas", 201, json={"source": "upload", "certificate_pem": org_ca.pem}
    )
    body = {"csr_pem": csr_pem(ec_key()), "ca_id": generated["id"], "pin": True}
    issued = await api.call("POST", f"{url}/certificates", 201, json=body)
    leaf, _ = org_ca.issue(spiffe_id("acme", "cert-bot"))
    registered = await api.call(
        "POST", f"{url}/certificates", 201, json={"certificate_pem": pem(leaf)}
    )
    own, _ = self_signed(clock.now(), spiffe_id("acme", "cert-bot"))
    await api.call("POST", f"{url}/certificates", 201, json={"certificate_pem": pem(own)})
    await api.call("PUT", f"{url}/certificate-pin", json={"certificate_id": registered["id"]})
    await api.call("DELETE", f"{url}/certificate-pin", 204)
    revocation = {"certificate_id": issued["id"], "reason": "keyCompromise"}
    await api.call("POST", "/v1/orgs/acme/certificate-revocations", 201, json=revocation)
    # Every certificate here lives two days, so each is in its last seven already.
    assert await pki_jobs.announce_expiring_once(runtime.database, clock) > 0
    await api.call(
        "POST", f"/v1/orgs/acme/cas/{generated['id']}/replace", 201, json={"source": "generate"}
    )


async def trust_flows(api: Api) -> None:
    """bindings created, updated, approved, revoked; invites created, used and revoked; orgs
    that applied approved and rejected."""
    agent = await create_agent(api.client, "acme", "bound-bot", capabilities=["invoices.read"])
    binding = await api.call(
        "POST",
        "/v1/orgs/acme/bindings",
        201,
        json={"agent_id": agent["id"], "scope": ["invoices.read"]},
    )
    url = f"/v1/orgs/acme/bindings/{binding['id']}"
    await api.call("PATCH", url, json={"note": "for the ledger"})
    await api.call("POST", f"{url}/approve")
    await api.call("POST", f"{url}/revoke")
    for org_id, decision in (("globex", "approve"), ("hooli", "reject")):
        invite = await api.call("POST", "/v1/invites", 201, json={"kind": "join"})
        applied = {
            "invite": invite["invite"],
            "org": {
                "id": org_id,
                "display_name": org_id.title(),
                "contact": {"name": "Hank Scorpio", "email": f"hank@{org_id}.example"},
            },
        }
        await api.call("POST", "/v1/onboarding/join", 201, headers={}, json=applied)
        await api.call("POST", f"/v1/orgs/{org_id}/{decision}")
    unused = await api.call("POST", "/v1/invites", 201, json={"kind": "join", "label": "spare"})
    await api.call("DELETE", f"/v1/invites/{unused['id']}", 204)


async def registration_flows(api: Api) -> None:
    """registration tokens created, used (an agent process registers) and revoked."""
    tokens = "/v1/orgs/acme/registration-tokens"
    used = await api.call("POST", tokens, 201, json={"label": "workers"})
    await api.call(
        "POST", "/v1/register", 201, headers=bearer(used["token"]), json={"name": "worker-1"}
    )
    spare = await api.call("POST", tokens, 201, json={"label": "spare"})
    await api.call("DELETE", f"{tokens}/{spare['id']}", 204)


async def operations_flows(api: Api, clock: FrozenClock, operations: Operations) -> None:
    """actions declared; commands created, running, succeeded, failed, cancelled, requeued
    and expired; the agent coming online, then going offline."""
    bot = await agent_client(api.client, "acme", "ops-bot", create_org_too=False)
    agent = bearer(await access_token(api.client, bot))
    commands = f"/v1/orgs/acme/agents/{bot.agent['id']}/commands"
    actions = {"actions": [{"name": "restart"}, {"name": "backup"}]}
    await api.call("PUT", "/v1/agent/actions", headers=agent, json=actions)
    poll = {"instance_id": "i-1", "wait": 0}

    async def run(status: str, **result: Any) -> None:
        [command] = await api.call("POST", commands, 201, json={"action": "restart"})
        [leased] = await api.call("GET", "/v1/agent/commands", headers=agent, params=poll)
        assert leased["id"] == command["id"]
        path = f"/v1/agent/commands/{command['id']}"
        await api.call("POST", f"{path}/running", headers=agent, json={"instance_id": "i-1"})
        report = {"instance_id": "i-1", "status": status, **result}
        await api.call("POST", f"{path}/result", headers=agent, json=report)

    await run("SUCCEEDED")
    await run("FAILED", error={"code": "DISK_FULL", "message": "no space left"})
    [pending] = await api.call("POST", commands, 201, json={"action": "backup"})
    await api.call("POST", f"{commands}/{pending['id']}/cancel")
    lapsing = {"action": "restart", "lease_seconds": 5, "max_attempts": 2}
    await api.call("POST", commands, 201, json=lapsing)
    await api.call("GET", "/v1/agent/commands", headers=agent, params=poll)
    await api.call("POST", commands, 201, json={"action": "backup", "expires_in": 30})
    heartbeat = {"instance_id": "i-1", "hostname": "host-1"}
    await api.call("POST", "/v1/agent/heartbeat", headers=agent, json=heartbeat)
    await operations.flush_heartbeats()
    assert await operations.announce_presence() == 1  # online
    clock.advance(31)  # the lease lapsed, the last command expired
    assert await operations.sweep_commands() >= 2
    clock.advance(operations.offline_threshold)
    assert await operations.announce_presence() == 1  # offline


async def webhook_flows(api: Api, events: Events, receiver: Receiver) -> None:
    """A subscription whose receiver fails is paused (after one failure, in this test)."""
    await events.relay()  # what came before is not for the subscription made now
    await subscribe(api.client, receiver, "acme", ["agent.*"])
    receiver.answer(500)
    await create_agent(api.client, "acme", "hooked-bot")
    await deliver(events)


async def outbox_rows(runtime: Runtime) -> list[OutboxEvent]:
    async with runtime.database.read_only() as session:
        statement = select(OutboxEvent).order_by(OutboxEvent.sequence)
        return list((await session.execute(statement)).scalars())


class TestConformance:
    @pytest.mark.parametrize("overrides", [{"webhook_pause_after_failures": 1}])
    async def test_every_event_the_flows_emit_is_catalogued_with_the_promised_data(
        self,
        client: httpx.AsyncClient,
        app: FastAPI,
        clock: FrozenClock,
        runtime: Runtime,
        events: Events,
        receiver: Receiver,
    ) -> None:
        api = Api(client)
        await create_org(client, "acme")
        await tenancy_flows(api)
        await registry_flows(api)
        await credential_flows(api)
        await signing_flows(api)
        await pki_flows(api, clock, runtime)
        await trust_flows(api)
        await registration_flows(api)
        await operations_flows(api, clock, app.state.operations)
        await webhook_flows(api, events, receiver)

        rows = await outbox_rows(runtime)
        uncatalogued = sorted({row.type for row in rows} - set(catalogue.EVENT_TYPES))
        assert uncatalogued == []
        invalid = []
        for row in rows:
            validator = Draft202012Validator(catalogue.data_schema(row.type))
            invalid += [(row.type, error.message) for error in validator.iter_errors(row.data)]
        assert invalid == []
        covered = Counter(row.type for row in rows)
        assert len(covered) >= MIN_TYPES_COVERED, sorted(covered)
        missing = sorted(set(catalogue.EVENT_TYPES) - set(covered))
        # webhook.test goes to the one subscription tested, never through the outbox.
        assert missing == ["webhook.test"], missing


class TestDocumentation:
    def test_every_type_is_in_the_operators_table(self) -> None:
        assert DOC.exists(), f"{DOC} is missing"
        text = DOC.read_text()
        undocumented = [name for name in catalogue.EVENT_TYPES if f"`{name}`" not in text]
        assert undocumented == []


class TestEventTypesRoute:
    async def test_every_type_is_listed_with_its_description_and_schema(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/v1/event-types", headers=ADMIN)
        assert response.status_code == 200, response.text
        listed = response.json()
        assert [entry["type"] for entry in listed] == list(catalogue.EVENT_TYPES)
        for entry in listed:
            description, members = catalogue.EVENT_TYPES[entry["type"]]
            assert entry["description"] == description
            assert entry["data_schema"] == catalogue.data_schema(entry["type"])
            Draft202012Validator.check_schema(entry["data_schema"])
            assert entry["data_schema"]["required"] == sorted(members)

    async def test_an_org_key_reads_it_too(self, client: httpx.AsyncClient) -> None:
        await create_org(client, "acme")
        key = await client.post("/v1/orgs/acme/keys", json={"name": "ci"}, headers=ADMIN)
        response = await client.get("/v1/event-types", headers=bearer(key.json()["secret"]))
        assert response.status_code == 200, response.text
        assert len(response.json()) == len(catalogue.EVENT_TYPES)


class TestDataSchema:
    def test_the_schema_requires_the_members_with_their_json_types(self) -> None:
        schema = catalogue.data_schema("credential.rotated")
        assert schema["required"] == ["agent_id", "client_id", "grace_period_seconds"]
        validator = Draft202012Validator(schema)
        good = {"agent_id": "a", "client_id": "c", "grace_period_seconds": 60, "more": True}
        assert validator.is_valid(good)
        assert not validator.is_valid({**good, "grace_period_seconds": "60"})
        assert not validator.is_valid({"agent_id": "a", "client_id": "c"})

    def test_an_unknown_type_has_no_schema(self) -> None:
        with pytest.raises(KeyError):
            catalogue.data_schema("agent.teleported")


class TestMatches:
    def test_a_star_matches_every_type(self) -> None:
        assert all(catalogue.matches(["*"], name) for name in catalogue.EVENT_TYPES)

    def test_an_exact_type_matches_only_itself(self) -> None:
        assert catalogue.matches(["agent.created"], "agent.created")
        assert not catalogue.matches(["agent.created"], "agent.updated")
        assert not catalogue.matches(["agent"], "agent.created")

    def test_a_family_matches_the_types_under_it(self) -> None:
        assert catalogue.matches(["agent.*"], "agent.created")
        assert catalogue.matches(["agent.*"], "agent.key.added")
        assert catalogue.matches(["agent.key.*"], "agent.key.added")
        assert not catalogue.matches(["agent.key.*"], "agent.created")

    def test_a_family_stops_at_the_dot(self) -> None:
        assert not catalogue.matches(["agent.*"], "agents.created")
        assert not catalogue.matches(["agent.*"], "agent")
        assert not catalogue.matches(["org.api_key.*"], "org.apixkey.created")

    def test_any_of_several_patterns_matches(self) -> None:
        patterns = ["org.deleted", "command.*"]
        assert catalogue.matches(patterns, "org.deleted")
        assert catalogue.matches(patterns, "command.failed")
        assert not catalogue.matches(patterns, "org.created")


class TestKnownPattern:
    @pytest.mark.parametrize(
        "pattern", ["*", "agent.*", "agent.key.*", "org.api_key.*", "certificate.pin.cleared"]
    )
    def test_a_pattern_matching_a_catalogued_type_is_known(self, pattern: str) -> None:
        assert catalogue.known_pattern(pattern)

    @pytest.mark.parametrize(
        "pattern", ["nothing.*", "agent.teleported", "agent", "agen.*", "agent.key", "*.created"]
    )
    def test_a_pattern_matching_nothing_is_unknown(self, pattern: str) -> None:
        assert not catalogue.known_pattern(pattern)


# Types that a LIKE without escaping, or a prefix without its dot, would match by mistake.
LOOKALIKES = ["org.apixkey.created", "agents.created", "agent", "agentxkey.added", "org.api_key"]
PATTERN_SETS = [
    ["agent.*"],
    ["agent.created"],
    ["agent.key.*"],
    ["org.api_key.*"],
    ["org.*"],
    ["agent"],
    ["agent.key.*", "org.deleted"],
    ["command.*", "credential.revoked", "ca.*"],
    ["agent.created", "agent.created", "agent.*"],
    ["certificate.pin.*"],
    ["nothing.*"],
    ["*"],
    ["org.deleted", "*"],
]


class TestTypeFilter:
    @pytest.fixture
    async def stored_types(self, runtime: Runtime, clock: FrozenClock) -> list[str]:
        """An outbox row of every catalogued type, and of each lookalike."""
        names = [*catalogue.EVENT_TYPES, *LOOKALIKES]
        async with runtime.database.unit_of_work() as session:
            for name in names:
                await emit(session, clock, type=name, org_id="acme", subject=None, data={})
        return names

    async def selected(self, runtime: Runtime, patterns: list[str]) -> list[str]:
        statement = select(OutboxEvent.type).where(
            catalogue.type_filter(patterns, OutboxEvent.type)
        )
        async with runtime.database.read_only() as session:
            return sorted((await session.execute(statement)).scalars())

    @pytest.mark.parametrize("patterns", PATTERN_SETS, ids=[" ".join(p) for p in PATTERN_SETS])
    async def test_the_database_selects_what_matches_selects(
        self, runtime: Runtime, stored_types: list[str], patterns: list[str]
    ) -> None:
        expected = sorted(name for name in stored_types if catalogue.matches(patterns, name))
        assert await self.selected(runtime, patterns) == expected

    async def test_no_patterns_select_everything(
        self, runtime: Runtime, stored_types: list[str]
    ) -> None:
        assert await self.selected(runtime, []) == sorted(stored_types)
