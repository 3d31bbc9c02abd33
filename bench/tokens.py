"""Token-service benchmark: issuance, DPoP-protected API calls and introspection, each beside a
bare-ASGI hello-world on the same ASGI server in the same run; one JSON document out.

    python bench/tokens.py --duration 8                      # SQLite + in-process kv
    python bench/tokens.py --backend postgres                # PostgreSQL + Redis
    python bench/tokens.py --servers uvicorn:1 --profile     # + py-spy profile of issuance

For each server (uvicorn with httptools and uvloop, granian; 1 and 2 workers) it serves the
baseline app, then Tabard on a fresh database with an enterprise org, one agent and N client
secrets, and drives every target from separate load-generator processes (bench/loadgen.py).
Several workers share Redis (db 8 by default) as their kv store, on SQLite too: `tabard serve`
refuses several workers on the in-process one. Rate limits stay on, set far above the load.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey

from run import (
    BENCH_DIR,
    LOADGEN,
    LOADGEN_GRACE_S,
    REPO_ROOT,
    LoadPlan,
    baseline_server,
    clean_env,
    client_cpu_pct,
    collect,
    log,
    machine,
    percentile,
    publish,
    row,
    split_connections,
    tabard_server,
    terminate_on_sigterm,
    wall_s,
)
from servers import HOST, RssSampler, Server, free_port, running, tree_cpu_s
from tokens_costs import crypto_limits, db_layer_costs, profile_steps, round_trips
from tokens_profile import profile_server

RESULTS_DIR = BENCH_DIR / "results"
PUBLIC_URL = "https://tabard.bench.example"
DEFAULT_POSTGRES_URL = "postgresql://127.0.0.1:5432/bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/8"
TARGET_TOKENS_PER_S = 5000
TARGET_P99_MS = 20.0
# Far above what the bench sends, yet still checked on every request: the limiter's cost stays in.
UNREACHED_RATE = "1000000"
CAPABILITIES = ["invoices.read", "invoices.write", "payments.read"]
# Proofs signed ahead: enough for this many DPoP requests per second (above what this machine
# serves), and the seconds the load generators get to sign them (~90 us each) before the start.
PROOF_RATE_CEILING = 6000
PRESIGN_DELAY_S = 10.0
START_DELAY_S = 1.0


@dataclass(frozen=True)
class ServerKind:
    """An ASGI server and its worker count."""

    name: str  # uvicorn | granian
    workers: int

    @property
    def label(self) -> str:
        return f"{self.name}:{self.workers}"


@dataclass(frozen=True)
class Backend:
    """Where Tabard keeps its state: SQLite (with the in-process kv store for one worker, Redis
    for several: `tabard serve` refuses several workers on an unshared kv), or PostgreSQL plus
    Redis."""

    name: str  # sqlite | postgres
    redis_url: str
    database_url: str = ""

    def kv_is_redis(self, workers: int) -> bool:
        return self.name == "postgres" or workers > 1

    def label(self, workers: int) -> str:
        return f"{self.name}+redis" if self.kv_is_redis(workers) else self.name

    def env(self, workers: int) -> dict[str, str]:
        env = {"TABARD_DATABASE_URL": self.database_url} if self.name == "postgres" else {}
        if self.kv_is_redis(workers):
            env |= {"TABARD_KV_BACKEND": "redis", "TABARD_REDIS_URL": self.redis_url}
        return env


@dataclass(frozen=True)
class Spec:
    """One load: a request, optionally with per-connection headers or DPoP proofs."""

    name: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    connection_headers: list[dict[str, str]] = field(default_factory=list)
    dpop_holders: list[dict[str, Any]] = field(default_factory=list)
    dpop_htu: str = ""
    # A body naming a different instance per request: {"template": "…{n}…", "count": N}.
    numbered_body: dict[str, Any] | None = None


@dataclass
class Fixture:
    """What the runner created on a Tabard server: clients, their tokens, DPoP holders."""

    clients: list[tuple[str, str]]
    bearer_tokens: list[str]
    dpop_holders: list[dict[str, Any]]

    def basic(self, index: int) -> dict[str, str]:
        client_id, secret = self.clients[index % len(self.clients)]
        raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        return {"Authorization": f"Basic {raw}"}


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per target")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes")
    parser.add_argument("--connections", type=int, default=64, help="connections in total")
    parser.add_argument("--credentials", type=int, default=64, help="client secrets to spread over")
    parser.add_argument(
        "--servers",
        default="uvicorn:1,uvicorn:2,granian:1,granian:2",
        help="comma-separated server:workers",
    )
    parser.add_argument("--targets", default="token,me_dpop,introspect", help="what to measure")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--database-url", default=DEFAULT_POSTGRES_URL, help="wiped; name has bench"
    )
    parser.add_argument(
        "--redis-url", default=DEFAULT_REDIS_URL, help="flushed before each server that uses it"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the first server's issuance")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--cprofile-tokens", type=int, default=300, help="sequential, in-process")
    parser.add_argument("--output", type=Path, help="JSON file (default results/tokens-<backend>)")
    args = parser.parse_args()
    if args.duration <= 0 or args.warmup < 0 or min(args.clients, args.connections) < 1:
        parser.error("need --duration > 0, --warmup >= 0, --clients >= 1, --connections >= 1")
    if args.backend == "postgres" and "bench" not in args.database_url.rsplit("/", 1)[-1]:
        parser.error("the PostgreSQL database is wiped: its name must contain 'bench'")
    return args


def server_kinds(text: str) -> list[ServerKind]:
    kinds = []
    for item in text.split(","):
        name, _, workers = item.strip().partition(":")
        if name not in ("uvicorn", "granian"):
            raise SystemExit(f"unknown server {name!r} (uvicorn|granian)")
        kinds.append(ServerKind(name, int(workers or 1)))
    return kinds


# Servers --------------------------------------------------------------------------------------


def tabard_env(backend: Backend, workers: int, admin_secret: str) -> dict[str, str]:
    """Settings of the Tabard under test: fixed keys (workers never race to create them), limits
    that stay on but are never reached, and the backend."""
    return {
        "TABARD_PUBLIC_URL": PUBLIC_URL,
        "TABARD_ADMIN_SECRET": admin_secret,
        "TABARD_SECRET_KEY": secrets.token_urlsafe(36),
        "TABARD_MASTER_KEY": secrets.token_urlsafe(36),
        "TABARD_TOKEN_RATE_LIMIT_PER_SECOND": UNREACHED_RATE,
        "TABARD_TOKEN_RATE_LIMIT_BURST": UNREACHED_RATE,
        "TABARD_API_RATE_LIMIT_PER_SECOND": UNREACHED_RATE,
        "TABARD_API_RATE_LIMIT_BURST": UNREACHED_RATE,
        "TABARD_LOG_FORMAT": "json",
        "TABARD_LOG_LEVEL": "warning",
        **backend.env(workers),
    }


@contextmanager
def baseline(kind: ServerKind, scratch: Path) -> Iterator[Server]:
    """The hello-world app on the same server and worker count as Tabard."""
    if kind.name == "uvicorn":
        with baseline_server(kind.workers, scratch) as server:
            yield server
        return
    port = free_port()
    command = [*granian_command(kind, port), "--working-dir", str(BENCH_DIR), "baseline_app:app"]
    log_path = scratch / f"baseline-{kind.name}-{kind.workers}.log"
    with running(command, env=clean_env({}), cwd=BENCH_DIR, port=port, log_path=log_path) as srv:
        yield srv


@contextmanager
def tabard(kind: ServerKind, scratch: Path, env: dict[str, str]) -> Iterator[Server]:
    """Tabard on a fresh data directory: `tabard serve` for uvicorn; for granian, the same
    migrations and admin set-up first, then granian on the app factory."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"tabard-{kind.name}-{kind.workers}-", dir=scratch))
    if kind.name == "uvicorn":
        admin = env["TABARD_ADMIN_SECRET"]
        with tabard_server(kind.workers, scratch, admin, data_dir=data_dir, extra_env=env) as srv:
            yield srv
        return
    full_env = clean_env({"TABARD_DATA_DIR": str(data_dir), **env})
    prepare = "import asyncio; from tabard.core.config import load_settings; "
    prepare += "from tabard.cli.bootstrap import prepare_database as p; "
    prepare += "asyncio.run(p(load_settings()))"
    for step in (["-m", "tabard.cli", "db", "upgrade"], ["-c", prepare]):
        subprocess.run([sys.executable, *step], env=full_env, cwd=data_dir, check=True)
    port = free_port()
    command = [*granian_command(kind, port), "--factory", "tabard.api.app:create_app_from_env"]
    log_path = scratch / f"tabard-{kind.name}-{kind.workers}.log"
    with running(command, env=full_env, cwd=data_dir, port=port, log_path=log_path) as srv:
        yield srv


def granian_command(kind: ServerKind, port: int) -> list[str]:
    granian = str(Path(sys.executable).with_name("granian"))
    command = [granian, "--interface", "asgi", "--host", HOST, "--port", str(port)]
    command += ["--workers", str(kind.workers), "--loop", "uvloop", "--http", "1"]
    return [*command, "--log-level", "warning", "--no-access-log"]


def reset_backend(backend: Backend, workers: int) -> None:
    """Empty PostgreSQL's public schema (tabard serve migrates) and the Redis database."""
    import asyncpg
    import redis

    if backend.kv_is_redis(workers):
        redis.Redis.from_url(backend.redis_url).flushdb()
    if backend.name != "postgres":
        return

    async def drop() -> None:
        connection = await asyncpg.connect(backend.database_url)
        try:
            await connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        finally:
            await connection.close()

    asyncio.run(drop())


def ensure_postgres_database(url: str) -> None:
    """Create the bench database when missing."""
    import asyncpg

    base, _, name = url.rpartition("/")

    async def create() -> None:
        connection = await asyncpg.connect(f"{base}/postgres")
        try:
            exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname=$1", name)
            if not exists:
                await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    asyncio.run(create())


# Set-up through the API -------------------------------------------------------------------------


def provision(server: Server, admin_secret: str, credentials: int) -> Fixture:
    """An enterprise org (no tier quota is reached), one agent, `credentials` client secrets,
    a Bearer token per client and a DPoP-bound token per client with its own key."""
    admin = {"Authorization": f"Bearer {admin_secret}"}
    with httpx.Client(base_url=server.url, timeout=60.0) as http:
        org = {"id": "bench", "display_name": "Bench", "tier": "enterprise"}
        expect(http.post("/v1/orgs", headers=admin, json=org), 201)
        agent = {"name": "bench-agent", "capabilities": CAPABILITIES}
        agent_id = expect(http.post("/v1/orgs/bench/agents", headers=admin, json=agent), 201)["id"]
        url = f"/v1/orgs/bench/agents/{agent_id}/credentials"
        clients = []
        for i in range(credentials):
            body = expect(http.post(url, headers=admin, json={"name": f"c{i}"}), 201)
            clients.append((body["client_id"], body["client_secret"]))
        fixture = Fixture(clients, [], [])
        for i in range(credentials):
            fixture.bearer_tokens.append(issue(http, fixture.basic(i))["access_token"])
            key = ECKey.generate_key("P-256")
            proof = dpop_proof(key, "POST", f"{PUBLIC_URL}/oauth2/token")
            answer = issue(http, {**fixture.basic(i), "DPoP": proof})
            if answer["token_type"] != "DPoP":  # noqa: S105 - a token type, not a secret
                raise RuntimeError(f"expected a DPoP-bound token, got {answer}")
            holder = {"jwk": key.as_dict(private=True), "access_token": answer["access_token"]}
            fixture.dpop_holders.append(holder)
    return fixture


def issue(http: httpx.Client, headers: dict[str, str]) -> dict[str, Any]:
    data = {"grant_type": "client_credentials"}
    return expect(http.post("/oauth2/token", headers=headers, data=data), 200)


def expect(response: httpx.Response, status: int) -> dict[str, Any]:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    body: dict[str, Any] = response.json()
    return body


def dpop_proof(key: ECKey, htm: str, htu: str, access_token: str | None = None) -> str:
    """A DPoP proof made with joserfc, independently of the load generator's own signer."""
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    claims: dict[str, Any] = {"jti": secrets.token_urlsafe(16), "htm": htm, "htu": htu}
    claims["iat"] = int(time.time())
    if access_token is not None:
        digest = hashlib.sha256(access_token.encode()).digest()
        claims["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return jwt.encode(header, claims, key)


def specs(fixture: Fixture, targets: list[str]) -> list[Spec]:
    """The loads: token issuance (one client per connection), /v1/me with DPoP, introspection."""
    form = "application/x-www-form-urlencoded"
    n = len(fixture.clients)
    all_specs = {
        "token": Spec(
            "token",
            "POST",
            "/oauth2/token",
            {"Content-Type": form},
            "grant_type=client_credentials",
            connection_headers=[fixture.basic(i) for i in range(n)],
        ),
        "me_dpop": Spec(
            "me_dpop",
            "GET",
            "/v1/me",
            dpop_holders=fixture.dpop_holders,
            dpop_htu=f"{PUBLIC_URL}/v1/me",
        ),
        # A resource server asks about a token of its own client: Basic auth plus one verify.
        "introspect": Spec(
            "introspect",
            "POST",
            "/oauth2/introspect",
            {"Content-Type": form},
            f"token={fixture.bearer_tokens[0]}",
            connection_headers=[fixture.basic(0)],
        ),
    }
    return [all_specs[name] for name in targets]


# Measuring --------------------------------------------------------------------------------------


def presign_delay_s(plan: LoadPlan) -> float:
    """Time for each load generator to sign its proofs (~90 us each) before the start; a long
    run (a heartbeat second pass) needs more than the default."""
    proofs_per_process = PROOF_RATE_CEILING * wall_s(plan) / plan.clients
    return max(PRESIGN_DELAY_S, 2.0 + proofs_per_process * 90e-6)


def jobs_for(server: Server, spec: Spec, plan: LoadPlan) -> list[bytes]:
    """One job per load-generator process, each with its own slice of the connections."""
    presign = 0
    start_delay = START_DELAY_S
    if spec.dpop_holders:
        presign = int(PROOF_RATE_CEILING * wall_s(plan) / plan.connections) + 1
        start_delay = presign_delay_s(plan)
    start_at = time.monotonic() + start_delay
    jobs, offset = [], 0
    for count in split_connections(plan):
        job: dict[str, Any] = {
            "host": HOST,
            "port": server.port,
            "method": spec.method,
            "path": spec.path,
            "headers": spec.headers,
            "body": spec.body,
            "connections": count,
            "start_at": start_at,
            "warmup_s": plan.warmup_s,
            "duration_s": plan.duration_s,
        }
        if spec.connection_headers:
            job["connection_headers"] = rotate(spec.connection_headers, offset, count)
        if spec.numbered_body is not None:
            job["numbered_body"] = {
                **spec.numbered_body,
                "offset": offset,
                "step": plan.connections,
            }
        if spec.dpop_holders:
            job["dpop"] = {
                "htu": spec.dpop_htu,
                "holders": rotate(spec.dpop_holders, offset, count),
                "presign_per_connection": presign,
            }
        jobs.append(json.dumps(job).encode())
        offset += count
    return jobs


def rotate(items: list[Any], offset: int, count: int) -> list[Any]:
    return [items[(offset + i) % len(items)] for i in range(count)]


def measure(server: Server, spec: Spec, plan: LoadPlan) -> dict[str, Any]:
    """Load `spec` while sampling the server's memory; return the figures of bench/run.py."""
    jobs = jobs_for(server, spec, plan)
    cpu_before = tree_cpu_s(server.process.pid)
    with RssSampler(server.process.pid) as sampler:
        tallies = drive(jobs, plan)
    server_cpu = tree_cpu_s(server.process.pid) - cpu_before
    latencies = sorted(lat for tally in tallies for lat in tally["latencies_us"])
    statuses: dict[str, int] = {}
    for tally in tallies:
        for status, count in tally["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    non_2xx = sum(count for status, count in statuses.items() if not status.startswith("2"))
    transport = sum(tally["transport_errors"] for tally in tallies)
    figures = {
        "requests": len(latencies),
        "rps": round(len(latencies) / plan.duration_s, 1),
        "p50_ms": round(percentile(latencies, 0.50) / 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) / 1000, 3),
        "max_ms": round(latencies[-1] / 1000, 3) if latencies else 0.0,
        "errors": non_2xx + transport,
        "non_2xx": non_2xx,
        "transport_errors": transport,
        "statuses": statuses,
        "peak_rss_mb": sampler.peak_mb,
        "server_cpu_pct": round(100 * server_cpu / wall_s(plan), 1),
        "client_cpu_pct": client_cpu_pct(tallies, plan),
    }
    if spec.dpop_holders:
        figures["dpop_signed_late"] = sum(t.get("dpop_signed_late", 0) for t in tallies)
    return figures


def drive(jobs: list[bytes], plan: LoadPlan) -> list[dict[str, Any]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in jobs:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(LOADGEN)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
                )
            )
        timeout = presign_delay_s(plan) + wall_s(plan) + LOADGEN_GRACE_S
        with ThreadPoolExecutor(len(procs)) as pool:
            futures = [
                pool.submit(collect, p, job, timeout) for p, job in zip(procs, jobs, strict=True)
            ]
            return [future.result() for future in futures]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def bench_server(
    kind: ServerKind, backend: Backend, plan: LoadPlan, args: argparse.Namespace, scratch: Path
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Baseline, then every target on a fresh Tabard; the profile when asked for."""
    log(f"{kind.label}: baseline /")
    with baseline(kind, scratch) as server:
        base = measure(server, Spec("baseline", "GET", "/"), plan)
    rows = [labelled(kind, backend, row("baseline", kind.workers, base, base))]
    reset_backend(backend, kind.workers)
    admin_secret = secrets.token_urlsafe(36)
    profile = None
    with tabard(kind, scratch, tabard_env(backend, kind.workers, admin_secret)) as server:
        fixture = provision(server, admin_secret, args.credentials)
        for spec in specs(fixture, args.targets.split(",")):
            log(f"{kind.label}: tabard {spec.method} {spec.path}")
            figures = measure(server, spec, plan)
            rows.append(labelled(kind, backend, row(spec.name, kind.workers, figures, base)))
        if args.profile:
            log(f"{kind.label}: profiling token issuance with py-spy")
            token_spec = specs(fixture, ["token"])[0]
            profile_plan = LoadPlan(plan.clients, plan.connections, 2.0, args.profile_seconds)
            raw = (
                RESULTS_DIR
                / f"tokens-profile-{backend.label(kind.workers)}-{kind.name}-{kind.workers}.txt"
            )
            profile = profile_server(
                server,
                lambda: measure(server, token_spec, profile_plan),
                START_DELAY_S + profile_plan.warmup_s,
                args.profile_seconds,
                raw,
            )
    return rows, profile


def labelled(kind: ServerKind, backend: Backend, result: dict[str, Any]) -> dict[str, Any]:
    result = {"server": kind.name, "backend": backend.label(kind.workers), **result}
    if result["target"] == "token":
        result["meets_target"] = (
            result["rps"] >= TARGET_TOKENS_PER_S
            and result["p99_ms"] < TARGET_P99_MS
            and result["errors"] == 0
        )
    return result


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """One line per row, for the log."""
    lines = []
    for r in rows:
        lines.append(
            f"{r['server']}:{r['workers']} {r['backend']} {r['target']:<10} "
            f"{r['rps']:>8.0f}/s p50 {r['p50_ms']:6.2f} p99 {r['p99_ms']:6.2f} ms "
            f"rss {r['peak_rss_mb']:6.1f} MB ratio {r['ratio_rps']} errors {r['errors']}"
        )
    return lines


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the source tree differed from it."""

    def git(*arguments: str) -> str:
        result = subprocess.run(["git", *arguments], cwd=REPO_ROOT, capture_output=True, text=True)
        return result.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--short", "src")),
    }


def main() -> None:
    """Every server kind on the chosen backend; JSON to stdout and to --output."""
    args = parse_args()
    terminate_on_sigterm()
    backend = Backend("sqlite", args.redis_url)
    if args.backend == "postgres":
        ensure_postgres_database(args.database_url)
        backend = Backend("postgres", args.redis_url, args.database_url)
    plan = LoadPlan(args.clients, args.connections, args.warmup, args.duration)
    rows: list[dict[str, Any]] = []
    profile = None
    loadavg_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tabard-bench-tokens-") as scratch:
        for i, kind in enumerate(server_kinds(args.servers)):
            args.profile = args.profile and i == 0
            kind_rows, kind_profile = bench_server(kind, backend, plan, args, Path(scratch))
            rows += kind_rows
            profile = profile or kind_profile
        log("in-process: round trips per token, cProfile by step, database layer costs")
        reset_backend(backend, 1)
        per_token = round_trips(backend.env(1), Path(scratch))
        reset_backend(backend, 1)
        steps = profile_steps(backend.env(1), Path(scratch), args.cprofile_tokens)
        layers = db_layer_costs(Path(scratch))
    document = {
        "machine": machine(),
        "code": code_version(),
        "loadavg_1m": {"before": loadavg_before, "after": os.getloadavg()[0]},
        "duration_s": plan.duration_s,
        "warmup_s": plan.warmup_s,
        "load": {"clients": plan.clients, "connections": plan.connections},
        "credentials": args.credentials,
        "backend": backend.name,
        "target": {"tokens_per_s": TARGET_TOKENS_PER_S, "p99_ms": TARGET_P99_MS},
        "crypto_limits_per_core": crypto_limits(),
        "per_token_request": per_token,
        "cprofile_sequential": steps,
        "db_round_trip_by_layer_sqlite": layers,
        "results": rows,
        "profile": profile,
    }
    for line in summary(rows):
        log(line)
    publish(document, args.output or RESULTS_DIR / f"tokens-{backend.name}.json")


if __name__ == "__main__":
    os.chdir(REPO_ROOT)
    main()
