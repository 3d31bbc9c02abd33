"""Benchmark runner: Tabard's HTTP surface against a bare ASGI app, one JSON document out.

    python bench/run.py --duration 8

For each worker count it serves the baseline app (uvicorn) and then Tabard (`tabard serve`),
drives each target with separate load-generator processes (bench/loadgen.py) and records
requests/s, latency percentiles, errors and the peak RSS of the server's process tree.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from servers import HOST, RssSampler, Server, free_port, running, tree_cpu_s

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_PATH = BENCH_DIR / "results" / "latest.json"
LOADGEN = BENCH_DIR / "loadgen.py"
START_DELAY_S = 1.0
LOADGEN_GRACE_S = 30.0


@dataclass(frozen=True)
class LoadPlan:
    """How hard and how long to push each target."""

    clients: int
    connections: int
    warmup_s: float
    duration_s: float


@dataclass(frozen=True)
class Target:
    """One endpoint to measure on a running server."""

    name: str
    path: str
    headers: dict[str, str]


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per target")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes")
    parser.add_argument("--connections", type=int, default=32, help="connections in total")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="JSON file to write")
    args = parser.parse_args()
    if args.duration <= 0 or args.warmup < 0 or min(args.clients, args.connections) < 1:
        parser.error("need --duration > 0, --warmup >= 0, --clients >= 1, --connections >= 1")
    return args


def percentile(sorted_values: list[int], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def loadgen_job(server: Server, target: Target, plan: LoadPlan, connections: int) -> bytes:
    """The JSON job for one load-generator process."""
    job = {
        "host": HOST,
        "port": server.port,
        "path": target.path,
        "headers": target.headers,
        "connections": connections,
        "start_at": time.monotonic() + START_DELAY_S,
        "warmup_s": plan.warmup_s,
        "duration_s": plan.duration_s,
    }
    return json.dumps(job).encode()


def split_connections(plan: LoadPlan) -> list[int]:
    """Spread the connections over the client processes as evenly as possible."""
    base, extra = divmod(plan.connections, plan.clients)
    return [base + (i < extra) for i in range(plan.clients) if base + (i < extra) > 0]


def drive(server: Server, target: Target, plan: LoadPlan) -> list[dict[str, Any]]:
    """Run the load-generator processes against `target`; return each one's tally."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        jobs = [loadgen_job(server, target, plan, n) for n in split_connections(plan)]
        for _ in jobs:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(LOADGEN)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
                )
            )
        timeout = START_DELAY_S + plan.warmup_s + plan.duration_s + LOADGEN_GRACE_S
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


def collect(proc: subprocess.Popen[bytes], job: bytes, timeout: float) -> dict[str, Any]:
    """Hand one load-generator process its job, wait for it and parse its JSON tally."""
    stdout, _ = proc.communicate(job, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(stdout)
    return result


def measure(server: Server, target: Target, plan: LoadPlan) -> dict[str, Any]:
    """Load one target while sampling the server's memory; return its figures."""
    cpu_before = tree_cpu_s(server.process.pid)
    with RssSampler(server.process.pid) as sampler:
        tallies = drive(server, target, plan)
    server_cpu = tree_cpu_s(server.process.pid) - cpu_before
    latencies = sorted(lat for tally in tallies for lat in tally["latencies_us"])
    statuses: dict[str, int] = {}
    for tally in tallies:
        for status, count in tally["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    non_2xx = sum(count for status, count in statuses.items() if not status.startswith("2"))
    transport = sum(tally["transport_errors"] for tally in tallies)
    return {
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


def client_cpu_pct(tallies: list[dict[str, Any]], plan: LoadPlan) -> float:
    """CPU the load generators used, in % of one core; near 100 x clients means client-bound."""
    cpu = sum(float(tally["cpu_s"]) for tally in tallies)
    return round(100 * cpu / wall_s(plan), 1)


def wall_s(plan: LoadPlan) -> float:
    """Seconds under load per target: warm-up plus measurement."""
    return plan.warmup_s + plan.duration_s


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without inherited TABARD_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABARD_")}
    env.update(extra)
    return env


@contextmanager
def baseline_server(workers: int, scratch: Path) -> Iterator[Server]:
    """The bare ASGI app under uvicorn, with the same worker count."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "baseline_app:app", "--app-dir", str(BENCH_DIR)]
    command += ["--host", HOST, "--port", str(port), "--workers", str(workers)]
    command += ["--log-level", "warning", "--no-access-log"]
    log = scratch / f"baseline-{workers}.log"
    with running(command, env=clean_env({}), cwd=REPO_ROOT, port=port, log_path=log) as server:
        yield server


BENCH_REDIS_URL = "redis://127.0.0.1:6379/9"
SHARED_KV = {"TABARD_KV_BACKEND": "redis", "TABARD_REDIS_URL": BENCH_REDIS_URL}
UNLIMITED_QUOTAS = json.dumps(
    {"free": {"api_calls_per_day": None, "tokens_per_day": None, "tokens_per_month": None}}
)


@contextmanager
def tabard_server(
    workers: int,
    scratch: Path,
    admin_secret: str,
    *,
    data_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """`tabard serve` on `data_dir`, by default a fresh one.

    The data directory is also its working directory (no stray .env); `extra_env` adds
    settings such as TABARD_DATABASE_URL.
    """
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix=f"tabard-{workers}-", dir=scratch))
    port = free_port()
    env = clean_env(
        {
            "TABARD_DATA_DIR": str(data_dir),
            "TABARD_LOG_FORMAT": "json",
            "TABARD_LOG_LEVEL": "warning",
            "TABARD_ADMIN_SECRET": admin_secret,
            # The load is the point: rate limits and the free tier's daily quota would cut it short.
            "TABARD_API_RATE_LIMIT_PER_SECOND": "0",
            "TABARD_TIER_QUOTAS": UNLIMITED_QUOTAS,
            # Several workers must share a kv store: `tabard serve` refuses the in-process one.
            **(SHARED_KV if workers > 1 else {}),
            **(extra_env or {}),
        }
    )
    command = [sys.executable, "-m", "tabard.cli", "serve", "--host", HOST, "--port", str(port)]
    command += ["--workers", str(workers)]
    log = scratch / f"tabard-{workers}.log"
    with running(command, env=env, cwd=data_dir, port=port, log_path=log) as server:
        yield server


def create_org_key(server: Server, admin_secret: str) -> str:
    """Create the `bench` organization and an API key through the API; return the key."""
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        admin = {"Authorization": f"Bearer {admin_secret}"}
        org = client.post("/v1/orgs", headers=admin, json={"id": "bench", "display_name": "Bench"})
        org.raise_for_status()
        key = client.post("/v1/orgs/bench/keys", headers=admin, json={"name": "bench"})
        key.raise_for_status()
        secret: str = key.json()["secret"]
        me = client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})
        me.raise_for_status()
        return secret


def row(target: str, workers: int, figures: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """One result row, with the ratios against the baseline at the same worker count."""
    result: dict[str, Any] = {"target": target, "workers": workers, **figures}
    result["baseline_rps"] = base["rps"]
    result["baseline_p99_ms"] = base["p99_ms"]
    result["ratio_rps"] = round(figures["rps"] / base["rps"], 3) if base["rps"] else None
    result["ratio_p99"] = round(figures["p99_ms"] / base["p99_ms"], 3) if base["p99_ms"] else None
    return result


def bench_workers(workers: int, plan: LoadPlan, scratch: Path) -> list[dict[str, Any]]:
    """Baseline first, then Tabard's /health and /v1/me, all at one worker count."""
    log(f"workers={workers}: baseline /")
    with baseline_server(workers, scratch) as server:
        base = measure(server, Target("baseline", "/", {}), plan)
    rows = [row("baseline", workers, base, base)]
    admin_secret = secrets.token_urlsafe(36)  # 48 characters
    with tabard_server(workers, scratch, admin_secret) as server:
        org_key = create_org_key(server, admin_secret)
        targets = [
            Target("health", "/health", {}),
            Target("me", "/v1/me", {"Authorization": f"Bearer {org_key}"}),
        ]
        for target in targets:
            log(f"workers={workers}: tabard {target.path}")
            rows.append(row(target.name, workers, measure(server, target, plan), base))
    return rows


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "wrk": shutil.which("wrk") is not None,
    }


def publish(document: dict[str, Any], output: Path) -> None:
    """A run's JSON document: on stdout, and written to `output`."""
    text = json.dumps(document, indent=2)
    print(text)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + "\n")


def log(message: str) -> None:
    """Progress goes to stderr, so stdout stays one JSON document."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def terminate_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so the finally blocks stop every server."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def main() -> None:
    """Run every worker count, print the JSON document and write it to --output."""
    args = parse_args()
    terminate_on_sigterm()
    plan = LoadPlan(args.clients, args.connections, args.warmup, args.duration)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tabard-bench-") as scratch:
        for workers in (int(w) for w in args.workers.split(",")):
            results += bench_workers(workers, plan, Path(scratch))
    document = {
        "machine": machine(),
        "duration_s": plan.duration_s,
        "warmup_s": plan.warmup_s,
        "load": {"clients": plan.clients, "connections": plan.connections, "kind": "raw asyncio"},
        "results": results,
    }
    publish(document, args.output)


if __name__ == "__main__":
    main()
