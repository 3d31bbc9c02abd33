"""Discovery benchmark: capability searches over a registry of 100,000 agents, one JSON out.

    python bench/discovery.py --backend sqlite
    python bench/discovery.py --backend postgres --database-url postgresql://127.0.0.1:5432/bench

Prepares a fresh database (SQLite in a data directory, or a PostgreSQL database whose `public`
schema is dropped and re-created), migrates it with `tabard db upgrade`, bulk-loads organizations
and agents with SQLAlchemy Core (not through the API: 100,000 POSTs would take far too long),
runs ANALYZE, starts `tabard serve` on it and measures `GET /health` (the baseline) and a set
of `GET /v1/discovery/agents` searches, one request at a time, with bench/loadgen.py.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse

import asyncpg
import httpx
from sqlalchemy import event, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from run import (
    LoadPlan,
    Target,
    clean_env,
    log,
    machine,
    measure,
    publish,
    row,
    tabard_server,
    terminate_on_sigterm,
)
from servers import Server
from tabard.core.config import load_settings
from tabard.core.context import ANONYMOUS, Actor, ActorKind
from tabard.core.db import Database, create_engine
from tabard.core.ids import new_id
from tabard.registry import discovery
from tabard.registry.did import agent_did
from tabard.registry.models import Agent, AgentCapability, AgentTag
from tabard.registry.schemas import SUGGESTED_TYPES, DiscoveryQuery
from tabard.tenancy.models import Organization

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_POSTGRES_URL = "postgresql://127.0.0.1:5432/bench"
PUBLIC_URL = "https://registry.bench.example"
TARGET_P99_MS = 50.0
BATCH = 2_000
CAPABILITY_ZIPF_S = 1.2
ORG_ZIPF_S = 0.8
TAG_ZIPF_S = 0.9

# The most popular capabilities, in popularity order; a generated long tail follows.
HEAD_CAPABILITIES = [
    "message.exchange",
    "text.summarize",
    "web.search",
    "text.translate",
    "documents:read",
    "email.send",
    "calendar.events:read",
    "code.review",
    "crm.contacts:read",
    "tickets:write",
    "invoices:read",
    "data.query",
    "speech.transcribe",
    "vision.ocr",
    "payments:write",
    "knowledge.retrieve",
    "workflow.orchestrate",
    "files:write",
    "sql.generate",
    "sentiment.classify",
]
DOMAINS = [
    "crm", "billing", "invoices", "payments", "support", "hr", "calendar", "email", "docs",
    "search", "analytics", "inventory", "shipping", "security", "devops", "code", "data",
    "finance", "legal", "marketing", "sales", "travel", "translation", "vision", "speech",
]  # fmt: skip
RESOURCES = [
    "contacts", "accounts", "orders", "reports", "tickets", "events", "files", "records",
    "alerts", "policies", "quotes", "messages", "jobs", "metrics", "users",
]  # fmt: skip
VERBS = ["read", "write", "list", "export", "approve", "sync"]
TAGS = [
    "prod", "internal", "beta", "eu", "us", "gdpr", "pci", "apac", "experimental", "soc2",
    "team-payments", "team-support", "team-growth", "team-platform", "team-data", "team-ml",
    "team-sales", "team-legal", "tier-1", "tier-2", "tier-3", "on-call", "deprecated", "pilot",
    "customer-facing", "batch", "realtime", "llm", "rules-based", "hipaa",
]  # fmt: skip
TYPE_WEIGHTS = {"worker": 45, "tool": 20, "orchestrator": 10, "router": 8, "monitor": 7}
ENVIRONMENT_WEIGHTS = {"production": 60, "staging": 20, "development": 20}
STATUS_WEIGHTS = {"active": 90, "suspended": 7, "decommissioned": 3}


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One generated agent, before it gets an id."""

    org: str
    name: str
    type: str
    capabilities: tuple[str, ...]
    tags: tuple[str, ...]
    environment: str
    visibility: str
    status: str
    age_s: int


@dataclass(frozen=True)
class Dataset:
    """Everything the loader inserts and the cases are chosen from (a pure function of seed)."""

    orgs: list[str]
    agents: list[AgentSpec]
    vocabulary: list[str]

    def holders(self) -> Counter[str]:
        """How many agents hold each capability."""
        return Counter(c for agent in self.agents for c in agent.capabilities)

    def tag_holders(self) -> Counter[str]:
        """How many agents carry each tag."""
        return Counter(t for agent in self.agents for t in agent.tags)


@dataclass(frozen=True)
class Case:
    """One discovery search: its query, who asks, and which generated agents it matches."""

    name: str
    params: list[tuple[str, str]]
    org: str | None
    matches: Callable[[AgentSpec], bool]
    page: int = 1

    def path(self, cursor: str | None = None) -> str:
        params = [*self.params, ("cursor", cursor)] if cursor else self.params
        return "/v1/discovery/agents?" + urlencode(params)

    def visible(self, agent: AgentSpec) -> bool:
        """The discovery rule: public active agents, plus every agent of the caller's org."""
        public = agent.visibility == "public" and agent.status == "active"
        return public or (self.org is not None and agent.org == self.org)


@dataclass(frozen=True)
class Backend:
    """Where the benchmark database lives and how the server reaches it."""

    name: str
    async_url: str
    server_env: dict[str, str]
    data_dir: Path


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), required=True)
    parser.add_argument("--agents", type=int, default=100_000, help="agents to load")
    parser.add_argument("--orgs", type=int, default=100, help="organizations to spread them over")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per case")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated registry")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_POSTGRES_URL,
        help="PostgreSQL database to WIPE and load (its name must contain 'bench')",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="server data directory (SQLite file, keys) to keep after the run; default: temporary",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep an already loaded database (same --agents/--orgs/--seed) instead of reloading",
    )
    parser.add_argument(
        "--explain", action="store_true", help="add each search's SQL and query plan to the rows"
    )
    parser.add_argument("--output", type=Path, help="JSON file to write")
    args = parser.parse_args()
    if args.duration <= 0 or args.warmup < 0 or min(args.agents, args.orgs, args.workers) < 1:
        parser.error("need --duration > 0, --warmup >= 0, --agents/--orgs/--workers >= 1")
    if args.backend == "postgres" and "bench" not in (urlparse(args.database_url).path or ""):
        parser.error("--database-url: the database is wiped; its name must contain 'bench'")
    if args.output is None:
        args.output = RESULTS_DIR / f"discovery-{args.backend}.json"
    return args


# --- The generated registry -------------------------------------------------------------------


def vocabulary(size: int, rng: random.Random) -> list[str]:
    """`size` capability names in popularity order: a hand-picked head, then a shuffled tail."""
    tail = [f"{d}.{r}:{v}" for d in DOMAINS for r in RESOURCES for v in VERBS]
    tail = [name for name in tail if name not in HEAD_CAPABILITIES]
    rng.shuffle(tail)
    return [*HEAD_CAPABILITIES, *tail][:size]


def zipf_cum_weights(n: int, s: float) -> list[float]:
    """Cumulative Zipf weights (rank r has weight 1 / r**s) for `random.choices`."""
    return list(itertools.accumulate(1 / rank**s for rank in range(1, n + 1)))


def distinct_draws(
    rng: random.Random, population: list[str], cum: list[float], k: int
) -> tuple[str, ...]:
    """`k` different items drawn by weight (popular ones first come more often)."""
    drawn: dict[str, None] = {}
    while len(drawn) < k:
        drawn[rng.choices(population, cum_weights=cum)[0]] = None
    return tuple(drawn)


def weighted(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def generate(agents: int, orgs: int, seed: int) -> Dataset:
    """A reproducible registry: Zipf-popular capabilities, tags and org sizes."""
    rng = random.Random(seed)
    org_ids = [f"org-{i:03d}" for i in range(orgs)]
    words = vocabulary(500, rng)
    capability_cum = zipf_cum_weights(len(words), CAPABILITY_ZIPF_S)
    org_cum = zipf_cum_weights(len(org_ids), ORG_ZIPF_S)
    tag_cum = zipf_cum_weights(len(TAGS), TAG_ZIPF_S)
    specs = []
    for number in range(agents):
        kind = weighted(rng, TYPE_WEIGHTS) if rng.random() < 0.9 else rng.choice(SUGGESTED_TYPES)
        specs.append(
            AgentSpec(
                org=rng.choices(org_ids, cum_weights=org_cum)[0],
                name=f"{kind}-{number:06d}",
                type=kind,
                capabilities=distinct_draws(rng, words, capability_cum, rng.randint(3, 8)),
                tags=distinct_draws(rng, TAGS, tag_cum, rng.randint(1, 3)),
                environment=weighted(rng, ENVIRONMENT_WEIGHTS),
                visibility="public" if rng.random() < 0.5 else "private",
                status=weighted(rng, STATUS_WEIGHTS),
                age_s=rng.randint(0, 365 * 86400),
            )
        )
    return Dataset(org_ids, specs, words)


def org_rows(dataset: Dataset, now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "id": org,
            "display_name": f"Organization {org}",
            "status": "active",
            "tier": "enterprise",
            "created_at": now,
            "updated_at": now,
        }
        for org in dataset.orgs
    ]


def agent_row(agent_id: str, spec: AgentSpec, now: datetime) -> dict[str, Any]:
    created = now - timedelta(seconds=spec.age_s)
    return {
        "id": agent_id,
        "org_id": spec.org,
        "name": spec.name,
        "display_name": spec.name.replace("-", " ").title(),
        "description": f"A {spec.type} agent that offers {', '.join(spec.capabilities[:3])}.",
        "type": spec.type,
        "version": "1.2.0",
        "capabilities": list(spec.capabilities),
        "tags": list(spec.tags),
        "environment": spec.environment,
        "endpoint_url": f"https://agents.{spec.org}.example/{spec.name}",
        "visibility": spec.visibility,
        "metadata": {"owner": spec.tags[0]},
        "status": spec.status,
        "did": agent_did(PUBLIC_URL, agent_id),
        "created_at": created,
        "updated_at": created,
    }


async def bulk_load(engine: AsyncEngine, dataset: Dataset) -> None:
    """Insert orgs, agents and the capability/tag lookup rows, BATCH agents per transaction."""
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        await connection.execute(insert(Organization.__table__), org_rows(dataset, now))
    for start in range(0, len(dataset.agents), BATCH):
        specs = dataset.agents[start : start + BATCH]
        ids = [new_id() for _ in specs]
        capabilities = [
            {"capability": c, "agent_id": i} for i, s in zip(ids, specs, strict=True)
            for c in s.capabilities
        ]  # fmt: skip
        tags = [{"tag": t, "agent_id": i} for i, s in zip(ids, specs, strict=True) for t in s.tags]
        async with engine.begin() as connection:
            rows = [agent_row(i, s, now) for i, s in zip(ids, specs, strict=True)]
            await connection.execute(insert(Agent.__table__), rows)
            await connection.execute(insert(AgentCapability.__table__), capabilities)
            await connection.execute(insert(AgentTag.__table__), tags)
        if (start // BATCH) % 10 == 9:
            log(f"loaded {start + len(specs):,} agents")


async def loaded_matches(engine: AsyncEngine, dataset: Dataset) -> bool:
    """Whether the database already holds this dataset (for --reuse)."""
    top, count = dataset.holders().most_common(1)[0]
    async with engine.connect() as connection:
        agents = (await connection.execute(text("SELECT count(*) FROM agents"))).scalar_one()
        holders = (
            await connection.execute(
                text("SELECT count(*) FROM agent_capabilities WHERE capability = :c"), {"c": top}
            )
        ).scalar_one()
    return bool(agents == len(dataset.agents) and holders == count)


# --- Databases ---------------------------------------------------------------------------------


def backend_for(args: argparse.Namespace, data_dir: Path) -> Backend:
    if args.backend == "sqlite":
        return Backend("sqlite", f"sqlite+aiosqlite:///{data_dir / 'tabard.db'}", {}, data_dir)
    url = args.database_url
    async_url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    return Backend("postgres", async_url, {"TABARD_DATABASE_URL": url}, data_dir)


async def reset_postgres(url: str) -> None:
    """Create the database if needed and give it an empty `public` schema."""
    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    maintenance = await asyncpg.connect(url.replace(parsed.path, "/postgres", 1))
    try:
        exists = await maintenance.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await maintenance.execute(f'CREATE DATABASE "{name}"')
    finally:
        await maintenance.close()
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
    finally:
        await connection.close()


def reset_sqlite(data_dir: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (data_dir / f"tabard.db{suffix}").unlink(missing_ok=True)


def migrate(backend: Backend) -> None:
    """`tabard db upgrade` with the server's own settings."""
    env = clean_env({"TABARD_DATA_DIR": str(backend.data_dir), **backend.server_env})
    command = [sys.executable, "-m", "tabard.cli", "db", "upgrade"]
    done = subprocess.run(command, env=env, cwd=backend.data_dir, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"tabard db upgrade failed:\n{done.stdout.decode()}{done.stderr.decode()}"
        )


async def planner_settings(backend: Backend) -> dict[str, str]:
    """PostgreSQL settings that change discovery plans (ALTER DATABASE ... SET survives a reset)."""
    if backend.name != "postgres":
        return {}
    connection = await asyncpg.connect(backend.server_env["TABARD_DATABASE_URL"])
    try:
        return {
            name: str(await connection.fetchval(f"SHOW {name}"))
            for name in ("plan_cache_mode", "server_version")
        }
    finally:
        await connection.close()


async def analyze(backend: Backend) -> None:
    """Planner statistics, as a live database would have them (VACUUM also sets PostgreSQL's
    visibility map, which index-only scans need; autovacuum would get there on its own)."""
    if backend.name == "postgres":
        connection = await asyncpg.connect(backend.server_env["TABARD_DATABASE_URL"])
        try:
            await connection.execute("VACUUM ANALYZE")
        finally:
            await connection.close()
        return
    engine = create_async_engine(backend.async_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("ANALYZE"))
    finally:
        await engine.dispose()


async def prepare(backend: Backend, dataset: Dataset, reuse: bool) -> dict[str, Any]:
    """A database holding `dataset`, migrated and analyzed; returns what it took."""
    engine = create_async_engine(backend.async_url)
    try:
        if reuse:
            try:
                if await loaded_matches(engine, dataset):
                    log("--reuse: the database already holds this dataset; not reloading")
                    return {"reused": True}
            except Exception as exc:  # any failure means "not loaded"
                log(f"--reuse: cannot use the existing database ({exc}); loading it")
        await engine.dispose()
        if backend.name == "postgres":
            await reset_postgres(backend.server_env["TABARD_DATABASE_URL"])
        else:
            reset_sqlite(backend.data_dir)
        started = time.monotonic()
        migrate(backend)
        log(f"loading {len(dataset.agents):,} agents into {backend.name}")
        await bulk_load(engine, dataset)
        loaded = time.monotonic()
        await analyze(backend)
        return {
            "reused": False,
            "load_s": round(loaded - started, 1),
            "analyze_s": round(time.monotonic() - loaded, 1),
        }
    finally:
        await engine.dispose()


# --- The cases ---------------------------------------------------------------------------------


def pick_cases(dataset: Dataset, searcher: str) -> tuple[list[Case], dict[str, Any]]:
    """The searches to measure, chosen by popularity in the generated data."""
    holders = dataset.holders()
    ranked = holders.most_common()
    common = ranked[0][0]
    rare = min(ranked, key=lambda item: (item[1], item[0]))[0]
    medium_target = len(dataset.agents) / 100
    medium = min(ranked, key=lambda item: (abs(item[1] - medium_target), item[0]))[0]
    tag = dataset.tag_holders().most_common()[3][0]
    kind = "worker"

    def has(*capabilities: str) -> Callable[[AgentSpec], bool]:
        return lambda agent: all(c in agent.capabilities for c in capabilities)

    cases = [
        Case("common", [("capability", common)], None, has(common)),
        Case("rare", [("capability", rare)], None, has(rare)),
        Case(
            "common_and_medium",
            [("capability", common), ("capability", medium)],
            None,
            has(common, medium),
        ),
        # All-of with a sparse intersection: a plan that walks the common label's holders in id
        # order (merge join, or an unlucky driving label) reads all of them for a few matches.
        Case(
            "common_and_rare",
            [("capability", common), ("capability", rare)],
            None,
            has(common, rare),
        ),
        Case("org_key_medium", [("capability", medium)], searcher, has(medium)),
        Case(
            "capability_tag_type",
            [("capability", common), ("tag", tag), ("type", kind)],
            None,
            lambda a: common in a.capabilities and tag in a.tags and a.type == kind,
        ),
        Case("common_page_2", [("capability", common)], None, has(common), page=2),
    ]
    chosen = {
        "common": {"capability": common, "holders": holders[common]},
        "medium": {"capability": medium, "holders": holders[medium]},
        "rare": {"capability": rare, "holders": holders[rare]},
        "tag": {"tag": tag, "holders": dataset.tag_holders()[tag]},
        "type": kind,
        "searching_org": searcher,
    }
    return cases, chosen


def probe(server: Server, case: Case, headers: dict[str, str]) -> tuple[str, int, bool]:
    """Fetch the case's page once (following next_cursor for page 2): its path, size, has-next."""
    with httpx.Client(base_url=server.url, headers=headers, timeout=30.0) as client:
        cursor = None
        for page in range(1, case.page + 1):
            path = case.path(cursor)
            response = client.get(path)
            response.raise_for_status()
            body = response.json()
            if page < case.page:
                cursor = body["next_cursor"]
                if cursor is None:
                    raise RuntimeError(f"{case.name}: page {page} has no next_cursor")
        return path, len(body["items"]), body["next_cursor"] is not None


def create_org_key(server: Server, admin_secret: str, org: str) -> str:
    """An API key of `org`, made through the API; returns its secret."""
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        admin = {"Authorization": f"Bearer {admin_secret}"}
        key = client.post(f"/v1/orgs/{org}/keys", headers=admin, json={"name": "bench"})
        key.raise_for_status()
        secret: str = key.json()["secret"]
        client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"}).raise_for_status()
        return secret


# --- Query plans (--explain) -------------------------------------------------------------------


async def explain(backend: Backend, case: Case, cursor_path: str) -> dict[str, Any]:
    """The SQL the server runs for `case` (built by tabard.registry.discovery itself), and its
    plan: EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL, EXPLAIN QUERY PLAN on SQLite."""
    settings = load_settings(
        _env_file=None, data_dir=backend.data_dir, **_database_setting(backend)
    )
    database = Database(create_engine(settings))
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured.append((statement, parameters))

    query = dict(_query_params(cursor_path))
    actor = Actor(ActorKind.ORG_KEY, "bench", case.org) if case.org else ANONYMOUS
    try:
        event.listen(database.engine.sync_engine, "before_cursor_execute", capture)
        async with database.read_only() as session:
            await discovery.search(session, actor, DiscoveryQuery.model_validate(query))
        event.remove(database.engine.sync_engine, "before_cursor_execute", capture)
        statement, parameters = captured[-1]
        prefix = (
            "EXPLAIN (ANALYZE, BUFFERS) " if backend.name == "postgres" else "EXPLAIN QUERY PLAN "
        )
        async with database.read_only() as session:
            connection = await session.connection()
            result = await connection.exec_driver_sql(prefix + statement, parameters)
            plan = [" ".join(str(v) for v in r) for r in result.all()]
    finally:
        await database.close()
    found = {"sql": statement, "parameters": list(parameters), "plan": plan}
    if backend.name == "postgres":
        url = backend.server_env["TABARD_DATABASE_URL"]
        found["generic_plan"] = await generic_plan(url, statement, list(parameters))
    return found


async def generic_plan(url: str, statement: str, parameters: list[Any]) -> list[str]:
    """The plan PostgreSQL switches a prepared statement to after five runs (plan_cache_mode
    auto) when it looks no costlier: the server's asyncpg statements are prepared and reused."""
    values = ", ".join(
        str(v) if isinstance(v, int) else "'" + str(v).replace("'", "''") + "'" for v in parameters
    )
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        await connection.execute("PREPARE bench_generic AS " + statement)
        rows = await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_generic({values})")
    finally:
        await connection.close()
    return [row[0] for row in rows]


def _database_setting(backend: Backend) -> dict[str, str]:
    url = backend.server_env.get("TABARD_DATABASE_URL")
    return {"database_url": url} if url else {}


def _query_params(path: str) -> Iterator[tuple[str, Any]]:
    """`?capability=a&capability=b&tag=t` as DiscoveryQuery fields (capability is a list)."""
    pairs = parse_qsl(urlparse(path).query)
    capabilities = [value for name, value in pairs if name == "capability"]
    if capabilities:
        yield "capability", capabilities
    yield from ((name, value) for name, value in pairs if name != "capability")


# --- The run -----------------------------------------------------------------------------------


def bench(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """Prepare the database, serve it and measure every case; the JSON document."""
    load_before = round(os.getloadavg()[0], 2)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="tabard-discovery-", dir=scratch))
    data_dir.mkdir(parents=True, exist_ok=True)
    backend = backend_for(args, data_dir.resolve())
    log(f"generating {args.agents:,} agents in {args.orgs} orgs (seed {args.seed})")
    dataset = generate(args.agents, args.orgs, args.seed)
    preparation = asyncio.run(prepare(backend, dataset, args.reuse))
    searcher = Counter(agent.org for agent in dataset.agents).most_common(1)[0][0]
    cases, chosen = pick_cases(dataset, searcher)
    plan = LoadPlan(clients=1, connections=1, warmup_s=args.warmup, duration_s=args.duration)
    admin_secret = secrets.token_urlsafe(36)  # 48 characters
    env = {"TABARD_PUBLIC_URL": PUBLIC_URL, **backend.server_env}
    rows: list[dict[str, Any]] = []
    with tabard_server(
        args.workers, scratch, admin_secret, data_dir=backend.data_dir, extra_env=env
    ) as server:
        org_key = create_org_key(server, admin_secret, searcher)
        log("baseline: /health")
        base = measure(server, Target("health", "/health", {}), plan)
        rows.append(row("health", args.workers, base, base))
        for case in cases:
            headers = {"Authorization": f"Bearer {org_key}"} if case.org else {}
            path, page_items, has_next = probe(server, case, headers)
            log(f"{case.name}: {path}")
            figures = measure(server, Target(case.name, path, headers), plan)
            result = row(case.name, args.workers, figures, base)
            result["path"] = path
            result["auth"] = f"org key ({case.org})" if case.org else "anonymous"
            result["matching"] = sum(
                1 for a in dataset.agents if case.visible(a) and case.matches(a)
            )
            result["page_items"] = page_items
            result["has_next_page"] = has_next
            result["meets_target"] = figures["p99_ms"] < TARGET_P99_MS and figures["errors"] == 0
            if args.explain:
                result["explain"] = asyncio.run(explain(backend, case, path))
            rows.append(result)
    searches = [r for r in rows if r["target"] != "health"]
    return {
        "loadavg_1m": {"before": load_before, "after": round(os.getloadavg()[0], 2)},
        "benchmark": "discovery",
        "backend": backend.name,
        "database": backend.server_env.get("TABARD_DATABASE_URL", backend.async_url),
        "machine": machine(),
        "duration_s": plan.duration_s,
        "warmup_s": plan.warmup_s,
        "workers": args.workers,
        "load": {"clients": 1, "connections": 1, "kind": "raw asyncio, sequential requests"},
        "dataset": {
            "agents": len(dataset.agents),
            "orgs": len(dataset.orgs),
            "capability_vocabulary": len(dataset.vocabulary),
            "capability_rows": sum(len(a.capabilities) for a in dataset.agents),
            "tag_rows": sum(len(a.tags) for a in dataset.agents),
            "public_active": sum(
                1 for a in dataset.agents if a.visibility == "public" and a.status == "active"
            ),
            "seed": args.seed,
            **preparation,
        },
        "chosen": chosen,
        "planner_settings": asyncio.run(planner_settings(backend)),
        "target_p99_ms": TARGET_P99_MS,
        "all_meet_target": all(r["meets_target"] for r in searches),
        "max_search_p99_ms": max(r["p99_ms"] for r in searches),
        "server_peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
        "results": rows,
    }


def main() -> None:
    """Run the benchmark, print the JSON document and write it to --output."""
    args = parse_args()
    terminate_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="tabard-discovery-") as scratch:
        document = bench(args, Path(scratch))
    publish(document, args.output)


if __name__ == "__main__":
    main()
