"""Events benchmark: how fast committed events reach webhook receivers, and whether a slow
receiver holds back a healthy one; one JSON document out.

    python bench/events.py                                   # memory (SQLite) and nats (PG)
    python bench/events.py --backends memory --deliveries 2000 --seconds 5

Per backend, one `tabard serve` (one worker) on a fresh database: `memory` is SQLite with the
in-process kv and bus (the embedded defaults), `nats` is PostgreSQL + Redis + NATS JetStream on
a stream of its own (deleted at the end). Webhooks go to bench/receiver.py, a separate process
that answers 204 at once (or, under /slow, after 15 s: past Tabard's 10 s timeout) and keeps
each delivery's commit-to-receive latency.

1. throughput: for 1, 10, 100 subscriptions, this process commits E outbox rows straight into
   the server's database (100 per transaction, E x N ~ --deliveries, E >= 200) and waits for
   the receiver to hold E x N unique deliveries. The server's relay finds rows committed by
   another process on its 0.25 s poll; the latencies include that.
2. isolation: events made through the API (PATCH of an agent) at --rate per second for
   --seconds, to one healthy subscription alone, then to it beside a subscription whose
   receiver never answers in time; the healthy receiver's latencies, and their ratio.
3. receiver baseline: the receiver's own capacity, the same bodies POSTed straight to it at
   Tabard's concurrency (64) by bench/loadgen.py; each throughput row divides by it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from run import (
    REPO_ROOT,
    LoadPlan,
    client_cpu_pct,
    log,
    machine,
    percentile,
    publish,
    split_connections,
    terminate_on_sigterm,
    wall_s,
)
from servers import HOST, RssSampler, Server, stop, tree_cpu_s
from tokens import (
    DEFAULT_REDIS_URL,
    RESULTS_DIR,
    Backend,
    ServerKind,
    code_version,
    drive,
    ensure_postgres_database,
    expect,
    reset_backend,
    tabard,
    tabard_env,
)

RECEIVER = Path(__file__).resolve().parent / "receiver.py"
DEFAULT_POSTGRES_URL = "postgresql://127.0.0.1:5432/tabard_bench"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
STREAM_PREFIX = "TABARD_BENCH_EVENTS_"
SERVER = ServerKind("uvicorn", 1)
UNSUBSCRIBE_ATTEMPTS = 5
BATCH = 100  # outbox rows per transaction
MIN_EVENTS = 200
SLOW_SECONDS = 15.0  # the receiver's delay under /slow: past Tabard's 10 s timeout
WEBHOOK_CONCURRENCY = 64  # TABARD_WEBHOOK_CONCURRENCY's default: what the baseline uses
BASELINE_CLIENTS = 2  # load-generator processes: one alone is the bottleneck
POLL_S = 0.5
QUIET_S = 1.0  # after deleting subscriptions: attempts already past the check finish


@dataclass(frozen=True)
class Target:
    """A backend under test: where Tabard keeps state, and its bus."""

    name: str  # memory | nats
    backend: Backend
    extra_env: dict[str, str]
    stream: str = ""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="memory,nats", help="memory,nats")
    parser.add_argument("--subscriptions", default="1,10,100", help="throughput rows")
    parser.add_argument("--deliveries", type=int, default=20_000, help="per throughput row")
    parser.add_argument("--max-wait", type=float, default=12.0, help="s after the last commit")
    parser.add_argument("--rate", type=float, default=25.0, help="isolation: events per second")
    parser.add_argument("--seconds", type=float, default=24.0, help="isolation: seconds of load")
    parser.add_argument("--drain-wait", type=float, default=10.0, help="isolation: s after load")
    parser.add_argument("--baseline-seconds", type=float, default=4.0, help="receiver baseline")
    parser.add_argument(
        "--database-url", default=DEFAULT_POSTGRES_URL, help="wiped; name has bench"
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="flushed")
    parser.add_argument("--nats-url", default=DEFAULT_NATS_URL)
    parser.add_argument("--output", type=Path, help="JSON file (default results/events-*)")
    args = parser.parse_args()
    args.backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    if not args.backends or set(args.backends) - {"memory", "nats"}:
        parser.error("--backends: memory, nats or both")
    args.subscriptions = [int(n) for n in args.subscriptions.split(",") if n.strip()]
    if not args.subscriptions or min(args.subscriptions) < 1 or max(args.subscriptions) > 100:
        parser.error("--subscriptions: 1 to 100 each (an org may have 100)")
    if args.deliveries < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("need --deliveries >= 1, --rate > 0, --seconds > 0")
    if "nats" in args.backends and "bench" not in args.database_url.rsplit("/", 1)[-1]:
        parser.error("the PostgreSQL database is wiped: its name must contain 'bench'")
    return args


# The receiver -----------------------------------------------------------------------------------


@dataclass
class Receiver:
    """The receiver process and a client for its /stats and /reset."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stats(self, latencies: bool = False) -> dict[str, Any]:
        query = "" if latencies else "?latencies=0"
        response = httpx.get(f"{self.url}/stats{query}", timeout=30)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def reset(self) -> None:
        httpx.post(f"{self.url}/reset", timeout=10).raise_for_status()

    def release(self) -> None:
        """Answer the slow requests still held, so the server's shutdown need not wait them."""
        httpx.post(f"{self.url}/release", timeout=10).raise_for_status()


@contextlib.contextmanager
def receiver_process() -> Iterator[Receiver]:
    command = [sys.executable, str(RECEIVER), "--host", HOST, "--port", "0"]
    command += ["--slow-prefix", "/slow", "--slow-seconds", str(SLOW_SECONDS)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        match = re.fullmatch(r"listening on (\d+)", line)
        if match is None:
            raise RuntimeError(f"the receiver did not start: {line!r}")
        yield Receiver(process, int(match.group(1)))
    finally:
        stop(process)


def sample_body(org: str) -> str:
    """An event as Tabard sends it (compact, sorted JSON), for the receiver baseline."""
    event = {
        "data": {"agent_id": "0" * 36, "agent_name": "bench-agent", "fields": ["description"]},
        "id": "0" * 36,
        "org": org,
        "subject": "0" * 36,
        "time": "2026-01-01T00:00:00.000000Z",
        "type": "agent.updated",
    }
    return json.dumps(event, separators=(",", ":"), sort_keys=True)


def receiver_baseline(receiver: Receiver, seconds: float) -> dict[str, Any]:
    """The receiver's own capacity: Tabard's request (headers and body) from loadgen.py, on
    WEBHOOK_CONCURRENCY keep-alive connections over BASELINE_CLIENTS processes."""
    body = sample_body("throughput-1")
    headers = {
        "Accept": "*/*",
        "Accept-Encoding": "gzip, deflate",
        "Content-Type": "application/json",
        "User-Agent": "Tabard-Webhooks/1",
        "webhook-id": "0" * 36,
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1," + "A" * 43 + "=",
    }
    plan = LoadPlan(BASELINE_CLIENTS, WEBHOOK_CONCURRENCY, 1.0, seconds)
    start_at = time.monotonic() + 1.0
    jobs = [
        json.dumps(
            {
                "host": HOST,
                "port": receiver.port,
                "method": "POST",
                "path": "/baseline",
                "headers": headers,
                "body": body,
                "connections": connections,
                "start_at": start_at,
                "warmup_s": plan.warmup_s,
                "duration_s": plan.duration_s,
            }
        ).encode()
        for connections in split_connections(plan)
    ]
    cpu_before = tree_cpu_s(receiver.process.pid)
    tallies = drive(jobs, plan)
    receiver_cpu = tree_cpu_s(receiver.process.pid) - cpu_before
    latencies = sorted(lat for tally in tallies for lat in tally["latencies_us"])
    errors = sum(tally["transport_errors"] for tally in tallies) + sum(
        n for tally in tallies for s, n in tally["statuses"].items() if not s.startswith("2")
    )
    receiver.reset()
    return {
        "connections": WEBHOOK_CONCURRENCY,
        "clients": plan.clients,
        "body_bytes": len(body),
        "seconds": seconds,
        "requests": len(latencies),
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": round(percentile(latencies, 0.50) / 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) / 1000, 3),
        "errors": errors,
        "receiver_cpu_pct": round(100 * receiver_cpu / wall_s(plan), 1),
        "client_cpu_pct": client_cpu_pct(tallies, plan),
    }


# Set-up through the API -------------------------------------------------------------------------


class Api:
    """Admin calls on the Tabard under test."""

    def __init__(self, server: Server, admin_secret: str) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=60.0)
        self.admin = {"Authorization": f"Bearer {admin_secret}"}
        self.failures: list[dict[str, Any]] = []  # unexpected answers, with the server's log

    def close(self) -> None:
        self.http.close()

    def org(self, org_id: str) -> None:
        org = {"id": org_id, "display_name": org_id, "tier": "enterprise"}
        expect(self.http.post("/v1/orgs", json=org, headers=self.admin), 201)

    def agent(self, org_id: str, name: str) -> str:
        body = {"name": name, "description": "bench"}
        url = f"/v1/orgs/{org_id}/agents"
        agent_id: str = expect(self.http.post(url, json=body, headers=self.admin), 201)["id"]
        return agent_id

    def key(self, org_id: str) -> str:
        url = f"/v1/orgs/{org_id}/keys"
        key = expect(self.http.post(url, json={"name": "bench"}, headers=self.admin), 201)
        secret: str = key["secret"]
        return secret

    def subscribe(self, org_id: str, url: str) -> str:
        body = {"url": url, "event_types": ["agent.*"]}
        path = f"/v1/orgs/{org_id}/webhooks"
        subscription_id: str = expect(self.http.post(path, json=body, headers=self.admin), 201)[
            "id"
        ]
        return subscription_id

    def unsubscribe(self, org_id: str, subscription_ids: list[str]) -> int:
        """Delete the subscriptions, retrying a failed DELETE; how many attempts failed."""
        failed = 0
        for subscription_id in subscription_ids:
            path = f"/v1/orgs/{org_id}/webhooks/{subscription_id}"
            for attempt in range(UNSUBSCRIBE_ATTEMPTS):
                response = self.http.delete(path, headers=self.admin)
                if response.status_code == 204 or (attempt and response.status_code == 404):
                    break  # (a 404 after a failure: that attempt deleted it after all)
                failed += 1
                self.failure(f"DELETE {path}", response)
                time.sleep(0.5)
            else:
                raise RuntimeError(f"DELETE {path} failed {UNSUBSCRIBE_ATTEMPTS} times")
        return failed

    def failure(self, request: str, response: httpx.Response) -> None:
        log(f"{request}: {response.status_code} {response.text[:300]}")
        time.sleep(0.2)  # the server logs the exception after answering
        try:
            lines = self.server.log_path.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        errors = [line[:4000] for line in lines if "error" in line.lower()]
        self.failures.append(
            {
                "request": request,
                "status": response.status_code,
                "body": response.text[:500],
                "server_log": errors[-5:],
            }
        )

    def metrics(self) -> dict[str, float]:
        """The events and webhook series of /metrics."""
        figures: dict[str, float] = {}
        for line in self.http.get("/metrics").text.splitlines():
            match = re.match(r"(tabard_(?:events|webhook)\w*)(\{[^}]*\})? ([0-9.e+-]+)$", line)
            if match and not match.group(1).endswith("_created"):
                figures[match.group(1) + (match.group(2) or "")] = float(match.group(3))
        return figures


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Counter increments between two scrapes (histogram buckets left out)."""
    return {
        name: round(value - before.get(name, 0.0), 3)
        for name, value in after.items()
        if "_bucket" not in name and value != before.get(name, 0.0)
    }


# Scenario 1: throughput -------------------------------------------------------------------------


async def commit_events(
    settings_overrides: dict[str, Any], org: str, agent: str, count: int
) -> dict[str, float]:
    """Commit `count` agent.updated outbox rows, BATCH per transaction, as fast as possible."""
    from tabard.core import outbox
    from tabard.core.clock import SystemClock
    from tabard.core.config import Settings
    from tabard.core.db import Database, create_engine

    settings = Settings(_env_file=None, **settings_overrides)
    database = Database(create_engine(settings))
    clock = SystemClock()
    data = {"agent_id": agent, "agent_name": "bench-agent", "fields": ["description"]}
    first_commit_at = 0.0
    started = time.time()
    try:
        for start in range(0, count, BATCH):
            async with database.unit_of_work() as session:
                for _ in range(min(BATCH, count - start)):
                    await outbox.emit(
                        session, clock, type="agent.updated", org_id=org, subject=agent, data=data
                    )
            if not first_commit_at:
                first_commit_at = time.time()
    finally:
        await database.close()
    return {
        "started_at": started,
        "first_commit_at": first_commit_at,
        "last_commit_at": time.time(),
    }


def wait_for(
    receiver: Receiver, paths: list[str] | None, expected: int, deadline: float
) -> tuple[int, bool]:
    """Poll the receiver until `paths` (all when None) hold `expected` unique deliveries, or
    the deadline passes; (unique deliveries seen, whether all arrived)."""
    unique = 0
    while True:
        stats = receiver.stats()
        chosen = stats["paths"] if paths is None else {p: stats["paths"].get(p) for p in paths}
        unique = sum(s["unique"] for s in chosen.values() if s)
        if unique >= expected:
            return unique, True
        if time.monotonic() >= deadline:
            return unique, False
        time.sleep(POLL_S)


def nearest_rank(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one), as bench/run.py."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_figures(latencies: list[float], prefix: str = "") -> dict[str, float | None]:
    """p50, p99 (nearest rank) and max of commit-to-receive latencies, in ms."""
    values = sorted(latencies)
    if not values:
        return {f"{prefix}p50_ms": None, f"{prefix}p99_ms": None, f"{prefix}max_ms": None}
    return {
        f"{prefix}p50_ms": round(nearest_rank(values, 0.50), 1),
        f"{prefix}p99_ms": round(nearest_rank(values, 0.99), 1),
        f"{prefix}max_ms": round(values[-1], 1),
    }


def throughput(
    server: Server,
    api: Api,
    receiver: Receiver,
    target: Target,
    db_overrides: dict[str, Any],
    subscriptions: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    began = time.monotonic()
    org = f"throughput-{subscriptions}"
    events = max(MIN_EVENTS, math.ceil(args.deliveries / subscriptions))
    expected = events * subscriptions
    log(f"{target.name}: throughput, {subscriptions} subscriptions x {events} events")
    api.org(org)
    agent = api.agent(org, "bench-agent")
    ids = [api.subscribe(org, f"{receiver.url}/s/{i}") for i in range(subscriptions)]
    time.sleep(QUIET_S)
    receiver.reset()
    metrics_before = api.metrics()
    cpu_before = tree_cpu_s(server.process.pid)
    with RssSampler(server.process.pid) as sampler:
        commits = asyncio.run(commit_events(db_overrides, org, agent, events))
        deadline = time.monotonic() + args.max_wait
        delivered, complete = wait_for(receiver, None, expected, deadline)
        waited_until = time.time()
    server_cpu = tree_cpu_s(server.process.pid) - cpu_before
    stats = receiver.stats(latencies=True)
    metrics = delta(metrics_before, api.metrics())
    # What is left of an unfinished row must not run into the next one.
    unsubscribe_failures = api.unsubscribe(org, ids)
    time.sleep(QUIET_S)
    paths = stats["paths"].values()
    last_at = max((p["last_at"] for p in paths), default=waited_until)
    seconds = max(1e-3, (last_at if complete else waited_until) - commits["first_commit_at"])
    latencies = [lat for p in paths for lat in p.get("latencies_ms", [])]
    window = max(1e-3, waited_until - commits["started_at"])
    return {
        "scenario": "throughput",
        "backend": target.name,
        "subscriptions": subscriptions,
        "events": events,
        "deliveries_expected": expected,
        "deliveries": delivered,
        "complete": complete,
        "commit_s": round(commits["last_commit_at"] - commits["started_at"], 3),
        "commits_per_s": round(
            events / max(1e-3, commits["last_commit_at"] - commits["started_at"]), 1
        ),
        "seconds": round(seconds, 3),
        "events_per_s": round(delivered / subscriptions / seconds, 1),
        "deliveries_per_s": round(delivered / seconds, 1),
        **latency_figures(latencies),
        "duplicates": stats["duplicates"],
        "received": stats["count"],
        "receiver_connections": stats["connections_opened"],
        "peak_rss_mb": sampler.peak_mb,
        "server_cpu_pct": round(100 * server_cpu / window, 1),
        "server_metrics": metrics,
        "unsubscribe_failures": unsubscribe_failures,
        "elapsed_s": round(time.monotonic() - began, 1),
    }


# Scenario 2: isolation --------------------------------------------------------------------------


async def produce(
    url: str, key: str, org: str, agents: list[str], rate: float, seconds: float
) -> dict[str, Any]:
    """PATCH an agent's description `rate` times a second for `seconds` (each emits
    agent.updated), on a fixed schedule: a slow answer does not delay the next request."""
    headers = {"Authorization": f"Bearer {key}"}
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as http:

        async def one(n: int) -> None:
            agent = agents[n % len(agents)]
            started = time.perf_counter()
            try:
                response = await http.patch(
                    f"/v1/orgs/{org}/agents/{agent}", json={"description": f"revision {n}"}
                )
                status = str(response.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[status] = statuses.get(status, 0) + 1

        total = int(rate * seconds)
        start = time.monotonic()
        tasks = []
        for n in range(total):
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - start
    values = sorted(latencies)
    return {
        "requests": total,
        "achieved_rate": round(total / elapsed, 1),
        "statuses": statuses,
        "api_p50_ms": round(nearest_rank(values, 0.50), 1),
        "api_p99_ms": round(nearest_rank(values, 0.99), 1),
    }


def isolation(
    server: Server,
    api: Api,
    receiver: Receiver,
    target: Target,
    with_slow: bool,
    args: argparse.Namespace,
) -> dict[str, Any]:
    began = time.monotonic()
    case = "with_slow" if with_slow else "healthy_only"
    org = f"isolation-{case.replace('_', '-')}"
    log(f"{target.name}: isolation, {case}, {args.rate:g}/s for {args.seconds:g} s")
    api.org(org)
    key = api.key(org)
    agents = [api.agent(org, f"agent-{i}") for i in range(4)]  # made before any subscription
    healthy = "/s/healthy"
    ids = [api.subscribe(org, receiver.url + healthy)]
    if with_slow:
        ids.append(api.subscribe(org, receiver.url + "/slow/x"))
    time.sleep(QUIET_S)
    receiver.reset()
    metrics_before = api.metrics()
    cpu_before = tree_cpu_s(server.process.pid)
    started = time.monotonic()
    with RssSampler(server.process.pid) as sampler:
        load = asyncio.run(produce(server.url, key, org, agents, args.rate, args.seconds))
        accepted = load["statuses"].get("200", 0)
        deadline = time.monotonic() + args.drain_wait
        load_ended = time.monotonic()
        delivered, complete = wait_for(receiver, [healthy], accepted, deadline)
    waited_s = time.monotonic() - load_ended
    server_cpu = tree_cpu_s(server.process.pid) - cpu_before
    window = time.monotonic() - started
    stats = receiver.stats(latencies=True)
    metrics = delta(metrics_before, api.metrics())
    unsubscribe_failures = api.unsubscribe(org, ids)  # the slow one's backlog would run on
    receiver.release()
    time.sleep(QUIET_S)
    healthy_stats = stats["paths"].get(healthy) or {"latencies_ms": [], "duplicates": 0}
    slow_stats = stats["paths"].get("/slow/x") or {"count": 0}
    # An event not delivered by the end of the wait is at least that old: count it so, or the
    # percentiles would describe only the events that got through.
    censored = [waited_s * 1000] * max(0, accepted - delivered)
    row = {
        "scenario": "isolation",
        "backend": target.name,
        "case": case,
        "load": load,
        "events": accepted,
        "healthy_delivered": delivered,
        "healthy_complete": complete,
        "healthy_undelivered": accepted - delivered,
        **latency_figures(healthy_stats["latencies_ms"] + censored),
        "p99_is_lower_bound": bool(censored),
        **latency_figures(healthy_stats["latencies_ms"], "delivered_"),
        "duplicates": stats["duplicates"],
        "peak_rss_mb": sampler.peak_mb,
        "server_cpu_pct": round(100 * server_cpu / window, 1),
        "server_metrics": metrics,
        "unsubscribe_failures": unsubscribe_failures,
    }
    if with_slow:
        row["slow_attempts_received"] = slow_stats["count"]
    row["elapsed_s"] = round(time.monotonic() - began, 1)
    return row


# One backend ------------------------------------------------------------------------------------


def targets(args: argparse.Namespace) -> list[Target]:
    chosen = []
    for name in args.backends:
        if name == "memory":
            chosen.append(Target("memory", Backend("sqlite", args.redis_url), {}))
            continue
        run_id = secrets.token_hex(4)
        stream = f"{STREAM_PREFIX}{run_id.upper()}"
        env = {
            "TABARD_BUS_BACKEND": "nats",
            "TABARD_NATS_URL": args.nats_url,
            "TABARD_BUS_STREAM": stream,
            # JetStream lets one stream hold a subject: subjects of our own, beside any other
            # Tabard on the same NATS.
            "TABARD_BUS_SUBJECTS_PREFIX": f"bench-events-{run_id}",
        }
        backend = Backend("postgres", args.redis_url, args.database_url)
        chosen.append(Target("nats", backend, env, stream))
    return chosen


def bench_target(
    target: Target,
    receiver: Receiver,
    baseline_rps: float,
    args: argparse.Namespace,
    scratch: Path,
    failures: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Every scenario on one fresh server; unexpected API answers are added to `failures`."""
    reset_backend(target.backend, SERVER.workers)
    admin_secret = secrets.token_urlsafe(36)
    env = tabard_env(target.backend, SERVER.workers, admin_secret) | target.extra_env
    server_scratch = scratch / target.name
    server_scratch.mkdir()
    rows: list[dict[str, Any]] = []
    with tabard(SERVER, server_scratch, env) as server:
        (data_dir,) = server_scratch.glob("tabard-*/")
        # The server's database as it sees it (an empty URL: the SQLite file in its data dir).
        db_overrides = {"data_dir": data_dir, "database_url": target.backend.database_url}
        api = Api(server, admin_secret)
        try:
            for n in args.subscriptions:
                row = throughput(server, api, receiver, target, db_overrides, n, args)
                row["receiver_baseline_rps"] = baseline_rps
                row["ratio_deliveries"] = (
                    round(row["deliveries_per_s"] / baseline_rps, 4) if baseline_rps else None
                )
                rows.append(row)
            healthy = isolation(server, api, receiver, target, False, args)
            slowed = isolation(server, api, receiver, target, True, args)
            if healthy["p99_ms"] and slowed["p99_ms"] is not None:
                slowed["healthy_only_p99_ms"] = healthy["p99_ms"]
                slowed["ratio_p99"] = round(slowed["p99_ms"] / healthy["p99_ms"], 3)
            rows += [healthy, slowed]
        finally:
            failures += [{"backend": target.name, **failure} for failure in api.failures]
            api.close()
    return rows


# NATS streams -----------------------------------------------------------------------------------


async def _delete_stream(url: str, name: str) -> bool:
    import nats
    from nats.js.errors import NotFoundError

    client = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        try:
            return bool(await client.jetstream().delete_stream(name))
        except NotFoundError:
            return False
    finally:
        await client.close()


# Main -------------------------------------------------------------------------------------------


def summary(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in rows:
        if r["scenario"] == "throughput":
            lines.append(
                f"{r['backend']:<6} throughput N={r['subscriptions']:<3} "
                f"{r['deliveries']}/{r['deliveries_expected']} in {r['seconds']:.1f} s: "
                f"{r['deliveries_per_s']:.0f} deliveries/s, {r['events_per_s']:.0f} events/s, "
                f"p50 {r['p50_ms']} p99 {r['p99_ms']} max {r['max_ms']} ms, "
                f"dup {r['duplicates']}, cpu {r['server_cpu_pct']} %, rss {r['peak_rss_mb']} MB, "
                f"ratio {r['ratio_deliveries']}"
            )
        else:
            lines.append(
                f"{r['backend']:<6} isolation {r['case']:<12} healthy "
                f"{r['healthy_delivered']}/{r['events']}: p50 {r['p50_ms']} p99 {r['p99_ms']} "
                f"max {r['max_ms']} ms"
                + (f", ratio_p99 {r['ratio_p99']}" if "ratio_p99" in r else "")
            )
    return lines


def main() -> None:
    args = parse_args()
    terminate_on_sigterm()
    chosen = targets(args)
    if "nats" in args.backends:
        ensure_postgres_database(args.database_url)
    loadavg_before = os.getloadavg()[0]
    began = time.monotonic()
    rows: list[dict[str, Any]] = []
    baseline: dict[str, Any] = {}
    failures: list[dict[str, Any]] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="tabard-bench-events-") as scratch,
            receiver_process() as receiver,
        ):
            log(
                f"receiver baseline: {WEBHOOK_CONCURRENCY} connections, {args.baseline_seconds:g} s"
            )
            baseline = receiver_baseline(receiver, args.baseline_seconds)
            log(f"receiver baseline: {baseline['rps']:.0f} requests/s")
            for target in chosen:
                rows += bench_target(
                    target, receiver, baseline["rps"], args, Path(scratch), failures
                )
    finally:
        for target in chosen:
            if target.stream:
                with contextlib.suppress(Exception):
                    if asyncio.run(_delete_stream(args.nats_url, target.stream)):
                        log(f"nats: deleted stream {target.stream}")
    document = {
        "machine": machine(),
        "code": code_version(),
        "loadavg_1m": {"before": loadavg_before, "after": os.getloadavg()[0]},
        "elapsed_s": round(time.monotonic() - began, 1),
        "server": SERVER.label,
        "backends": {
            t.name: {"database": t.backend.name, "bus": "nats" if t.stream else "memory"}
            | ({"stream": t.stream} if t.stream else {})
            for t in chosen
        },
        "settings": {
            "deliveries": args.deliveries,
            "batch": BATCH,
            "max_wait_s": args.max_wait,
            "rate": args.rate,
            "seconds": args.seconds,
            "drain_wait_s": args.drain_wait,
            "slow_seconds": SLOW_SECONDS,
        },
        "receiver_baseline": baseline,
        "results": rows,
        "failures": failures,
    }
    for line in summary(rows):
        log(line)
    publish(document, args.output or RESULTS_DIR / f"events-{'-'.join(args.backends)}.json")


if __name__ == "__main__":
    os.chdir(REPO_ROOT)
    main()
