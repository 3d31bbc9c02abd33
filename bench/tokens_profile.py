"""Where token issuance spends its time on the live server under load: a py-spy profile.

Used by bench/tokens.py (the in-process measurements are in bench/tokens_costs.py). py-spy
samples only the thread holding the GIL (`--gil`): a worker runs one event loop under one GIL, so
GIL time is what limits it, and `gil_held_pct` says how busy it was (well under 100 % means the
worker waited: on I/O, on locks, or for a CPU). The samples of the event-loop thread are
summarized three ways, as shares and as microseconds per request (other threads, e.g.
aiosqlite's connection threads, are listed apart):
- `phases`: the innermost step of the token request the sample is in (client authentication,
  rate limit, quota, signing, audit write, ...), or the layer around it (middleware, framework,
  ASGI server, event loop); SQLAlchemy's synchronous core runs in greenlets whose frames do not
  link back to the step, so those samples are named for the session call instead;
- `libraries`: the package whose code was running (the leaf frame's package: SQLAlchemy,
  aiosqlite, cryptography, json, starlette, ...);
- `top_functions`: the functions with most self time.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from servers import Server, process_tree

PYSPY_RATE_HZ = 200
# The token request's own steps, innermost first wins: (label, file suffix, function).
PHASES: list[tuple[str, str, str]] = [
    ("form parsing", "tokens/routes.py", "_token_request"),
    ("client auth: secret digest (HMAC)", "core/hashing.py", "keyed_digest"),
    ("client auth: credential read + checks", "credentials/service.py", ""),
    ("client auth: agent read", "registry/service.py", "get_agent"),
    ("client auth: org read", "tenancy/service.py", "get_org"),
    ("client auth: token policy read", "tokens/org_settings.py", "policy_for"),
    ("client auth: read transaction (begin, close)", "tokens/service.py", "_caller"),
    ("client auth: cached caller, kv checks", "tokens/caller_cache.py", ""),
    ("rate limit (GCRA on kv)", "limits/service.py", "check_token_rate"),
    ("tier quota counters (kv)", "limits/service.py", "consume_quota"),
    ("tier quota counters (kv)", "limits/service.py", "_counter"),
    ("limits: rest (headers, policy)", "limits/", ""),
    ("signing key lookup", "signing/service.py", "active_key"),
    ("JWT claims (ids, json)", "tokens/access_tokens.py", "access_token_claims"),
    ("ES256 signature (cryptography)", "signing/algorithms.py", ""),
    ("JWT encode", "tokens/access_tokens.py", "encode_jwt"),
    ("audit: chain head lock (upsert + SELECT FOR UPDATE)", "audit/service.py", "_lock_head"),
    ("audit: event hash, insert, flush", "audit/service.py", "record"),
    (
        "audit: batch (multi-row INSERT, head update)",
        "audit/service.py",
        "record_batch",
    ),
    ("audit: group-commit transaction (BEGIN, COMMIT)", "core/group_commit.py", ""),
    ("audit: request side (details, wait)", "tokens/service.py", "_record_issue"),
    ("audit: event rows (hash chain, redaction, canonical JSON)", "audit/", ""),
    ("response JSON", "starlette/responses.py", "render"),
    ("token endpoint: rest of the service", "tokens/service.py", ""),
    ("token endpoint: route", "tokens/routes.py", ""),
]
# Samples in none of the steps: the layer they are in, innermost first wins.
LAYERS: list[tuple[str, str, str]] = [
    ("kv store (outside limits and the caller cache)", "core/kv/", ""),
    ("aiosqlite hand-off (queue to its thread, future back)", "aiosqlite/", ""),
    ("middleware (request id, span, metrics, log)", "api/middleware.py", ""),
    ("middleware (request id, span, metrics, log)", "opentelemetry/", ""),
    ("FastAPI/Starlette routing, request, response", "starlette/", ""),
    ("FastAPI/Starlette routing, request, response", "fastapi/", ""),
    ("ASGI server (uvicorn/granian, httptools)", "uvicorn/", ""),
    ("ASGI server (uvicorn/granian, httptools)", "granian/", ""),
]
# SQLAlchemy's synchronous core runs in a greenlet whose frames do not link back to the
# coroutine that awaits it, so these samples cannot name their request step: they are named for
# the session call at the greenlet's root instead.
_GREENLET_ROOTS = {
    "Session.execute": "SQLAlchemy in greenlet: execute (query compile, rows to objects)",
    "Session.get": "SQLAlchemy in greenlet: get by primary key",
    "Session.flush": "SQLAlchemy in greenlet: flush (audit inserts and updates)",
    "TransactionalContext.__exit__": "SQLAlchemy in greenlet: commit",
    "Session.begin": "SQLAlchemy in greenlet: begin",
    "Session.close": "SQLAlchemy in greenlet: close",
}
LIBRARIES: list[tuple[str, str]] = [
    ("sqlalchemy", "/sqlalchemy/"),
    ("aiosqlite", "/aiosqlite/"),
    ("sqlite3", "/sqlite3/"),
    ("asyncpg", "/asyncpg/"),
    ("redis", "/redis/"),
    ("cryptography", "/cryptography/"),
    ("json", "/json/"),
    ("pydantic", "/pydantic"),
    ("fastapi", "/fastapi/"),
    ("starlette", "/starlette/"),
    ("uvicorn", "/uvicorn/"),
    ("granian", "/granian/"),
    ("opentelemetry", "/opentelemetry/"),
    ("prometheus_client", "/prometheus_client/"),
    ("logging", "/logging/"),
    ("structlog", "/structlog/"),
    ("uuid/ids", "/uuid.py"),
    ("tabard", "/tabard/"),
    ("asyncio", "/asyncio/"),
]
_FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>[^:()]+)(?::(?P<line>\d+))?\)$")


# py-spy of the live server --------------------------------------------------------------------


def profile_server(
    server: Server,
    load: Callable[[], dict[str, Any]],
    delay: float,
    seconds: float,
    output: Path,
) -> dict[str, Any]:
    """Run `load` while py-spy samples the server (its worker when it has one) for `seconds`
    from `delay` on (the load's measured window); the raw collapsed stacks go to `output`."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        return {"error": "py-spy is not installed (pip install py-spy)"}
    pid = _python_worker(server.process.pid)
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [pyspy, "record", "--pid", str(pid), "--rate", str(PYSPY_RATE_HZ), "--threads"]
    # One event loop, one GIL: who holds it is what limits a worker. Non-blocking: pausing the
    # worker for every sample slowed SQLite issuance fourfold.
    command += ["--gil", "--nonblocking"]
    command += ["--format", "raw", "--output", str(output), "--duration", str(round(seconds))]
    spies: list[subprocess.Popen[bytes]] = []

    def start_spy() -> None:
        spies.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))

    timer = threading.Timer(delay, start_spy)
    timer.start()
    try:
        figures = load()
        timer.join()
        _, err = spies[0].communicate(timeout=seconds + 60)
    finally:
        timer.cancel()
        for spy in spies:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
    if spies[0].returncode != 0 or not output.exists():
        return {"error": f"py-spy failed: {err.decode(errors='replace')[-500:]}"}
    summary = summarize(output.read_text(), figures["requests"])
    summary["gil_held_pct"] = _pct(summary["samples"], round(PYSPY_RATE_HZ * seconds))
    return {
        "pid": pid,
        "rate_hz": PYSPY_RATE_HZ,
        "raw_stacks": str(output),
        "load_while_profiled": figures,
        **summary,
    }


def _python_worker(root: int) -> int:
    """The process serving requests: the deepest descendant (a worker), else the root."""
    tree = process_tree(root)
    return tree[-1] if len(tree) > 1 else root


def summarize(raw: str, requests: int) -> dict[str, Any]:
    """Shares of samples by phase, library and function (see the module docstring), and the
    event-loop thread's CPU per request by phase (`requests` answered while it was sampled)."""
    threads: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    loop_thread = _busiest_thread(raw)
    for line in raw.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text:
            continue
        count = int(count_text)
        thread, *frames = stack_text.split(";")
        threads[thread] += count
        if thread != loop_thread:
            continue
        parsed = [_parse(frame) for frame in frames]
        phases[_phase(parsed)] += count
        libraries[_library(parsed)] += count
        leaf = parsed[-1] if parsed else ("?", "?")
        functions[f"{leaf[0]} ({_short(leaf[1])})"] += count
    total = sum(phases.values()) or 1
    all_samples = sum(threads.values()) or 1
    return {
        "samples": all_samples,
        "threads": {name: _pct(n, all_samples) for name, n in threads.most_common(6)},
        "loop_thread": loop_thread,
        "loop_samples": total,
        "loop_cpu_us_per_request": _per_request(total, requests),
        "phases_pct": {name: _pct(n, total) for name, n in phases.most_common()},
        "phases_us_per_request": {
            name: _per_request(n, requests) for name, n in phases.most_common()
        },
        "libraries_pct": {name: _pct(n, total) for name, n in libraries.most_common()},
        "top_functions_pct": {name: _pct(n, total) for name, n in functions.most_common(25)},
    }


def _busiest_thread(raw: str) -> str:
    """The event loop's thread: the one whose stacks hold the token endpoint most often."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        thread = stack_text.split(";", 1)[0]
        counts[thread] += int(count_text or 0) * (2 if "tokens/" in stack_text else 1)
    return counts.most_common(1)[0][0] if counts else ""


def _parse(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    return match["function"], match["file"]


def _phase(frames: list[tuple[str, str]]) -> str:
    for markers in (PHASES, LAYERS):
        for function, file in reversed(frames):
            for label, suffix, name in markers:
                if suffix in file and (not name or name in function.split(".")):
                    return label
    for function, file in frames:
        if "sqlalchemy/" in file:
            return _GREENLET_ROOTS.get(function, "SQLAlchemy in greenlet: other")
    return "event loop / other"


def _library(frames: list[tuple[str, str]]) -> str:
    for _, file in reversed(frames):
        for label, marker in LIBRARIES:
            if marker in "/" + file:
                return label
    return "other"


def _short(file: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def _per_request(samples: int, requests: int) -> float:
    return round(samples / PYSPY_RATE_HZ / max(1, requests) * 1_000_000, 1)


def _pct(part: int, whole: int) -> float:
    return round(100 * part / whole, 1)


def main() -> None:
    """Summarize a raw py-spy file again: `python bench/tokens_profile.py FILE [REQUESTS]`."""
    raw = Path(sys.argv[1]).read_text()
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    print(json.dumps(summarize(raw, requests), indent=2))


if __name__ == "__main__":
    main()
