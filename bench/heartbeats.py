"""Heartbeat benchmark: can one server absorb a 100,000-instance fleet beating every 30 s
(3,333 heartbeats/s; the target is 3,500/s) without falling behind? One JSON document out.

    python bench/heartbeats.py --duration 8                  # SQLite + in-process kv
    python bench/heartbeats.py --backend postgres            # PostgreSQL + Redis

Each connection is one agent (its own access token) cycling through its share of the
`--instances` instance ids, so the run beats for that many distinct instances. Beside it, in
the same run and on the same server kind, the hello-world baseline. After the load, the server's
own metrics say how the buffer kept up: flush durations and sizes, and whether every accepted
beat reached the database (the `heartbeats` counters add up to the 200s the load saw).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from joserfc.jwk import ECKey

from run import REPO_ROOT, LoadPlan, log, machine, publish, row, terminate_on_sigterm
from tokens import (
    DEFAULT_POSTGRES_URL,
    DEFAULT_REDIS_URL,
    PUBLIC_URL,
    RESULTS_DIR,
    Backend,
    ServerKind,
    Spec,
    baseline,
    code_version,
    dpop_proof,
    ensure_postgres_database,
    expect,
    measure,
    reset_backend,
    server_kinds,
    summary,
    tabard,
    tabard_env,
)

TARGET_PER_S = 3500
HEARTBEAT_PATH = "/v1/agent/heartbeat"
BODY = (
    '{"instance_id":"i-{n}","hostname":"host-{n}","version":"1.4.2","sdk_version":"0.1.0",'
    '"status":{"queue_depth":3,"healthy":true}}'
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes")
    parser.add_argument("--connections", type=int, default=64, help="connections = agents")
    parser.add_argument(
        "--instances",
        type=int,
        default=100_000,
        help="distinct instances (rounded up to a multiple of --connections)",
    )
    parser.add_argument(
        "--fresh-share",
        type=float,
        default=0.0,
        help="share of beats from instances beating for the first time (audited); 0.1 is the "
        "steady state of a 30 s interval with one audited beat per instance per 5 minutes",
    )
    parser.add_argument(
        "--dpop",
        action="store_true",
        help="DPoP-bound tokens and a fresh proof per beat, as the SDK sends (default: Bearer)",
    )
    parser.add_argument("--servers", default="uvicorn:1,uvicorn:2", help="server:workers, ...")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--database-url", default=DEFAULT_POSTGRES_URL, help="wiped; name has bench"
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="flushed before each server")
    parser.add_argument("--output", type=Path, help="JSON file (default results/heartbeats-*)")
    args = parser.parse_args()
    if not 0 <= args.fresh_share <= 1:
        parser.error("--fresh-share is a share: between 0 and 1")
    if args.backend == "postgres" and "bench" not in args.database_url.rsplit("/", 1)[-1]:
        parser.error("the PostgreSQL database is wiped: its name must contain 'bench'")
    # Connection i beats instances i, i + C, i + 2C, … as agent i mod C. Unless C divides the
    # instance count, each wrap-around hands an instance to another agent: a new (agent,
    # instance) pair, audited as a first beat, and twice the fleet after two passes.
    args.instances = math.ceil(args.instances / args.connections) * args.connections
    return args


@dataclass
class Fleet:
    """Each connection's agent: its Authorization header, or its DPoP key and bound token."""

    headers: list[dict[str, str]] = field(default_factory=list)
    dpop_holders: list[dict[str, Any]] = field(default_factory=list)


def provision(url: str, admin_secret: str, agents: int, *, dpop: bool) -> Fleet:
    """An enterprise org with `agents` agents, each with a Bearer token (or a DPoP-bound one)."""
    admin = {"Authorization": f"Bearer {admin_secret}"}
    fleet = Fleet()
    with httpx.Client(base_url=url, timeout=60.0) as http:
        org = {"id": "fleet", "display_name": "Fleet", "tier": "enterprise"}
        expect(http.post("/v1/orgs", json=org, headers=admin), 201)
        for i in range(agents):
            agent = expect(
                http.post("/v1/orgs/fleet/agents", json={"name": f"worker-{i}"}, headers=admin),
                201,
            )
            base = f"/v1/orgs/fleet/agents/{agent['id']}"
            credential = expect(http.post(f"{base}/credentials", json={}, headers=admin), 201)
            pair = f"{credential['client_id']}:{credential['client_secret']}".encode()
            basic = {"Authorization": "Basic " + base64.b64encode(pair).decode()}
            form = {"grant_type": "client_credentials"}
            if not dpop:
                token = expect(http.post("/oauth2/token", data=form, headers=basic), 200)
                fleet.headers.append({"Authorization": f"Bearer {token['access_token']}"})
                continue
            key = ECKey.generate_key("P-256")
            proof = {"DPoP": dpop_proof(key, "POST", f"{PUBLIC_URL}/oauth2/token")}
            token = expect(http.post("/oauth2/token", data=form, headers=basic | proof), 200)
            holder = {"jwk": key.as_dict(private=True), "access_token": token["access_token"]}
            fleet.dpop_holders.append(holder)
    return fleet


def scrape(url: str) -> dict[str, float]:
    """The heartbeat and Redis series of the server's /metrics (one worker's, with several)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    figures: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"(tabard_(?:heartbeat|redis)\w*)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if match:
            figures[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return figures


async def stored(database_url: str, data_dir: Path) -> dict[str, int]:
    """Rows and summed heartbeat counts in agent_instances after the final flush."""
    if database_url:
        import asyncpg

        connection = await asyncpg.connect(database_url)
        try:
            rows, beats = await connection.fetchrow(
                "SELECT count(*), coalesce(sum(heartbeats), 0) FROM agent_instances"
            )
        finally:
            await connection.close()
        return {"instances": int(rows), "heartbeats": int(beats)}
    import sqlite3

    with sqlite3.connect(data_dir / "tabard.db") as connection:
        rows, beats = connection.execute(
            "SELECT count(*), coalesce(sum(heartbeats), 0) FROM agent_instances"
        ).fetchone()
    return {"instances": int(rows), "heartbeats": int(beats)}


def _newest_data_dir(scratch: Path) -> Path:
    """The data directory of the Tabard just started (bench.tokens.tabard makes a fresh one)."""
    databases = sorted(scratch.glob("tabard-*/tabard.db"), key=lambda path: path.stat().st_mtime)
    return databases[-1].parent if databases else scratch


def bench_server(
    kind: ServerKind, backend: Backend, plan: LoadPlan, args: argparse.Namespace, scratch: Path
) -> list[dict[str, Any]]:
    log(f"{kind.label}: baseline /")
    with baseline(kind, scratch) as server:
        base = measure(server, Spec("baseline", "GET", "/"), plan)
    rows = [
        {
            "server": kind.name,
            "backend": backend.label(kind.workers),
            **row("baseline", kind.workers, base, base),
        }
    ]
    reset_backend(backend, kind.workers)
    admin_secret = secrets.token_urlsafe(36)
    env = tabard_env(backend, kind.workers, admin_secret)
    with tabard(kind, scratch, env) as server:
        log(f"{kind.label}: provisioning {args.connections} agents")
        fleet = provision(server.url, admin_secret, args.connections, dpop=args.dpop)
        spec = Spec(
            "heartbeat_dpop" if args.dpop else "heartbeat",
            "POST",
            HEARTBEAT_PATH,
            {"Content-Type": "application/json"},
            connection_headers=fleet.headers,
            dpop_holders=fleet.dpop_holders,
            dpop_htu=f"{PUBLIC_URL}{HEARTBEAT_PATH}",
            numbered_body={
                "template": BODY,
                "count": args.instances,
                "fresh_every": round(1 / args.fresh_share) if args.fresh_share else 0,
            },
        )
        log(f"{kind.label}: tabard heartbeats over {args.instances} instances")
        figures = measure(server, spec, plan)
        result = {
            "server": kind.name,
            "backend": backend.label(kind.workers),
            **row(spec.name, kind.workers, figures, base),
        }
        time.sleep(3)  # two flush intervals: everything accepted is written
        result["metrics_one_worker"] = scrape(server.url)
        result["stored"] = asyncio.run(stored(backend.database_url, _newest_data_dir(scratch)))
        result["meets_target"] = result["rps"] >= TARGET_PER_S and result["errors"] == 0
        rows.append(result)
    return rows


def main() -> None:
    args = parse_args()
    terminate_on_sigterm()
    backend = Backend("sqlite", args.redis_url)
    if args.backend == "postgres":
        ensure_postgres_database(args.database_url)
        backend = Backend("postgres", args.redis_url, args.database_url)
    plan = LoadPlan(args.clients, args.connections, args.warmup, args.duration)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tabard-bench-heartbeats-") as scratch:
        for kind in server_kinds(args.servers):
            rows += bench_server(kind, backend, plan, args, Path(scratch))
    document = {
        "machine": machine(),
        "code": code_version(),
        "duration_s": plan.duration_s,
        "load": {"clients": plan.clients, "connections": plan.connections},
        "instances": args.instances,
        "fresh_share": args.fresh_share,
        "dpop": args.dpop,
        "target_per_s": TARGET_PER_S,
        "backend": backend.name,
        "results": rows,
    }
    for line in summary(rows):
        log(line)
    publish(document, args.output or RESULTS_DIR / f"heartbeats-{backend.name}.json")


if __name__ == "__main__":
    os.chdir(REPO_ROOT)
    main()
