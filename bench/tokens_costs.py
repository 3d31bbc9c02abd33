"""What one token request costs, measured in this process on the real app (no server, no
network): round trips (SQL statements, transactions, kv operations, hand-offs to aiosqlite's
connection thread), a cProfile of sequential requests broken down by the steps of the request,
what one database round trip costs through each layer, and the ES256 ceiling of this machine.

Used by bench/tokens.py, beside the py-spy profile of the live server (bench/tokens_profile.py).
cProfile inflates Python-heavy code more than C (signing, sqlite), so read its step times as
proportions; the layer costs and the crypto ceiling are plain timings.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import cProfile
import pstats
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import event, select, text

from tabard.api.app import build_runtime, create_app
from tabard.core.config import Settings, load_settings
from tabard.core.db import Database
from tabard.core.logging import configure_logging
from tabard.core.migrations import upgrade
from tabard.tenancy.authentication import ensure_admin_secret
from tabard.tenancy.models import Organization

_KV_OPERATIONS = ("get", "set", "set_if_absent", "incr", "get_many", "gcra", "delete", "ttl")
# Steps of a token request, as (label, file suffix, function name); times are inclusive, so a
# step's time contains the steps listed under it (indented).
STEPS: list[tuple[str, str, str]] = [
    ("whole request in the app (middleware in)", "api/middleware.py", "__call__"),
    ("  token route", "tokens/routes.py", "token"),
    ("    form parsing", "tokens/routes.py", "_token_request"),
    ("    client authentication (cache, else reads)", "tokens/service.py", "_authenticated"),
    ("      cached caller lookup (kv checks)", "tokens/caller_cache.py", "get"),
    ("      read transaction (cache misses)", "tokens/service.py", "_caller"),
    (
        "        credential read + checks (incl. agent read)",
        "credentials/service.py",
        "authenticate_secret",
    ),
    ("        agent reads (2 per cache miss)", "registry/service.py", "get_agent"),
    ("        org read", "tenancy/service.py", "get_org"),
    ("        token policy read", "tokens/org_settings.py", "policy_for"),
    ("      secret digest (HMAC)", "core/hashing.py", "keyed_digest"),
    ("    rate limit (GCRA)", "limits/service.py", "check_token_rate"),
    ("    tier quota counters", "limits/service.py", "consume_quota"),
    ("    signing key lookup", "signing/service.py", "active_key"),
    ("    JWT claims", "tokens/access_tokens.py", "access_token_claims"),
    ("    JWT encode + ES256 sign", "tokens/access_tokens.py", "encode_jwt"),
    ("    audit, request side (queue and wait)", "tokens/service.py", "_record_issue"),
    ("  audit, group-commit writer (transaction)", "core/group_commit.py", "_commit"),
    ("    audit.record_batch (per batch)", "audit/service.py", "record_batch"),
    ("    audit.record (per event)", "audit/service.py", "record"),
    ("      chain head lock (upsert + SELECT FOR UPDATE)", "audit/service.py", "_lock_head"),
    ("  JSON response render", "starlette/responses.py", "render"),
    ("SQLAlchemy AsyncSession.execute/get (all)", "sqlalchemy/ext/asyncio/session.py", "execute"),
    ("aiosqlite round trips (all)", "aiosqlite/core.py", "_execute"),
]


def _fresh_settings(backend_env: dict[str, str], data_dir: Path) -> Settings:
    overrides: dict[str, Any] = {"data_dir": data_dir, "log_level": "warning"}
    overrides["token_rate_limit_per_second"] = 1_000_000
    overrides["token_rate_limit_burst"] = 1_000_000
    if "TABARD_DATABASE_URL" in backend_env:
        overrides["database_url"] = backend_env["TABARD_DATABASE_URL"]
        overrides["kv_backend"] = "redis"
        overrides["redis_url"] = backend_env["TABARD_REDIS_URL"]
    return load_settings(**overrides)


@contextlib.asynccontextmanager
async def _app_client(
    settings: Settings,
) -> AsyncIterator[tuple[Any, httpx.AsyncClient, dict[str, str]]]:
    """The real app on a fresh database with one client; (runtime, http client, Basic header)."""
    configure_logging(settings.log_format, settings.log_level)  # stdout stays the JSON document
    if settings.is_postgres:
        await _reset_postgres(settings.database_url)
    await upgrade(settings)
    runtime = build_runtime(settings)
    admin_secret = secrets.token_urlsafe(36)
    async with runtime.database.unit_of_work() as session:
        await ensure_admin_secret(session, admin_secret, runtime.clock)
    app = create_app(settings, runtime=runtime)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            basic = await _one_client(http, admin_secret)
            for _ in range(5):  # caches, the first signing key, prepared statements
                await _token(http, basic)
            yield runtime, http, basic
    finally:
        with contextlib.suppress(Exception):
            close = getattr(app.state.token_service, "close", None)  # the group committer
            if close is not None:
                await close()
            await runtime.kv.close()
            await runtime.bus.close()
            await runtime.database.close()


async def _token(http: httpx.AsyncClient, basic: dict[str, str]) -> None:
    response = await http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, headers=basic
    )
    response.raise_for_status()


# Round trips per token --------------------------------------------------------------------------


def round_trips(backend_env: dict[str, str], scratch: Path, tokens: int = 20) -> dict[str, Any]:
    """SQL statements (SQLAlchemy events), transactions, kv operations and, on SQLite, hand-offs
    to aiosqlite's connection thread that one client_credentials request costs."""
    return asyncio.run(_round_trips(_fresh_settings(backend_env, scratch / "round-trips"), tokens))


async def _round_trips(settings: Settings, tokens: int) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    statements: Counter[str] = Counter()

    def on_execute(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        statements[" ".join(statement.split())[:90]] += 1

    def on_commit(_conn: Any) -> None:
        counts["commits"] += 1

    async with _app_client(settings) as (runtime, http, basic):
        sync_engine = runtime.database.engine.sync_engine
        event.listen(sync_engine, "before_cursor_execute", on_execute)
        event.listen(sync_engine, "commit", on_commit)
        with (
            _counting_calls(aiosqlite.core.Connection, ("_execute",), counts, "aiosqlite."),
            _counting_calls(runtime.kv, _KV_OPERATIONS, counts, "kv."),
        ):
            for _ in range(tokens):
                await _token(http, basic)
        event.remove(sync_engine, "before_cursor_execute", on_execute)
        event.remove(sync_engine, "commit", on_commit)
    return {
        "sql_statements": round(sum(statements.values()) / tokens, 2),
        "commits": round(counts.pop("commits", 0) / tokens, 2),
        "aiosqlite_thread_handoffs": round(counts.pop("aiosqlite._execute", 0) / tokens, 2),
        "kv_operations": {name: round(n / tokens, 2) for name, n in sorted(counts.items())},
        "statements": {text: round(n / tokens, 2) for text, n in statements.most_common()},
    }


async def _one_client(http: httpx.AsyncClient, admin_secret: str) -> dict[str, str]:
    """An enterprise org, an agent and a client secret; its Basic header."""
    admin = {"Authorization": f"Bearer {admin_secret}"}
    org = {"id": "bench", "display_name": "Bench", "tier": "enterprise"}
    (await http.post("/v1/orgs", json=org, headers=admin)).raise_for_status()
    agent = {"name": "bench-agent", "capabilities": ["invoices.read"]}
    created = await http.post("/v1/orgs/bench/agents", json=agent, headers=admin)
    url = f"/v1/orgs/bench/agents/{created.json()['id']}/credentials"
    credential = (await http.post(url, json={"name": "c"}, headers=admin)).json()
    raw = f"{credential['client_id']}:{credential['client_secret']}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@contextlib.contextmanager
def _counting_calls(
    owner: Any, names: tuple[str, ...], counts: Counter[str], prefix: str
) -> Iterator[None]:
    """Count calls of the async methods `names` of `owner` (a class or an instance)."""
    originals = {name: getattr(owner, name) for name in names if hasattr(owner, name)}

    def counted(name: str, original: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[prefix + name] += 1
            return await original(*args, **kwargs)

        return wrapper

    for name, original in originals.items():
        setattr(owner, name, counted(name, original))
    try:
        yield
    finally:
        for name, original in originals.items():
            if isinstance(owner, type):
                setattr(owner, name, original)
            else:
                delattr(owner, name)


# cProfile of sequential requests ------------------------------------------------------------------


def profile_steps(backend_env: dict[str, str], scratch: Path, tokens: int = 300) -> dict[str, Any]:
    """Sequential token requests under cProfile: inclusive microseconds per request by step."""
    return asyncio.run(_profile_steps(_fresh_settings(backend_env, scratch / "cprofile"), tokens))


async def _profile_steps(settings: Settings, tokens: int) -> dict[str, Any]:
    async with _app_client(settings) as (_, http, basic):
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(tokens):
            await _token(http, basic)
        plain = (time.perf_counter() - started, time.process_time() - cpu_started)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(tokens):
            await _token(http, basic)
        profiler.disable()
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in stats.values())  # self times add up to the whole
    steps = {}
    for label, suffix, name in STEPS:
        inclusive = sum(
            entry[3]
            for (file, _, function), entry in stats.items()
            if function == name and file.endswith(".py") and suffix in file
        )
        steps[label] = round(inclusive / tokens * 1e6)
    return {
        "tokens": tokens,
        "unprofiled_us_per_token": {
            "wall": round(plain[0] / tokens * 1e6),
            "cpu_incl_client": round(plain[1] / tokens * 1e6),
        },
        "profiled_us_per_token": round(total / tokens * 1e6),
        "steps_inclusive_us_per_token": steps,
        "top_self_us_per_token": _top_self(stats, tokens),
    }


def _top_self(stats: dict[Any, Any], tokens: int, count: int = 20) -> dict[str, int]:
    ranked = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:count]
    top = {}
    for (file, line, function), entry in ranked:
        short = file.split("site-packages/")[-1].split("src/")[-1]
        top[f"{function} ({short}:{line})"] = round(entry[2] / tokens * 1e6)
    return top


# One database round trip, layer by layer ----------------------------------------------------------


def db_layer_costs(scratch: Path, repeat: int = 500) -> dict[str, dict[str, float]]:
    """Microseconds (wall and CPU) of one primary-key read of an org on SQLite, through each layer
    the app stacks: sqlite3, aiosqlite, SQLAlchemy Core (text), the ORM, and a whole read-only
    transaction as `Database.read_only` runs it."""
    settings = load_settings(data_dir=scratch / "layers", log_level="warning")
    return asyncio.run(_db_layer_costs(settings, repeat))


async def _db_layer_costs(settings: Settings, repeat: int) -> dict[str, dict[str, float]]:
    import sqlite3

    from tabard.core.db import create_engine

    await upgrade(settings)
    path = str(settings.data_dir / "tabard.db")
    query = "SELECT id, display_name, status, tier FROM organizations WHERE id = 'bench'"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT OR IGNORE INTO organizations (id, display_name, status, tier, created_at, "
            "updated_at) VALUES ('bench', 'Bench', 'active', 'free', '2025-01-01', '2025-01-01')"
        )
        results = {
            "sqlite3 (no thread)": _timed(lambda: connection.execute(query).fetchall(), repeat)
        }
    async with aiosqlite.connect(path) as connection:

        async def aiosqlite_read() -> None:
            async with connection.execute(query) as cursor:
                await cursor.fetchall()

        results["aiosqlite"] = await _timed_async(aiosqlite_read, repeat)
    database = Database(create_engine(settings))
    try:
        async with database.read_only() as session:
            core = text(query)
            results["SQLAlchemy Core text()"] = await _timed_async(
                lambda: session.execute(core), repeat
            )
            orm = select(Organization).where(Organization.id == "bench")

            async def orm_read() -> None:
                (await session.execute(orm)).scalar_one()
                session.expunge_all()

            results["SQLAlchemy ORM select"] = await _timed_async(orm_read, repeat)

        async def transaction() -> None:
            async with database.read_only() as session:
                (await session.execute(orm)).scalar_one()

        results["read_only() transaction + ORM select"] = await _timed_async(transaction, repeat)
    finally:
        await database.close()
    return results


def _timed(work: Callable[[], object], repeat: int) -> dict[str, float]:
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        work()
    return _per_call(started, cpu, repeat)


async def _timed_async(work: Callable[[], Any], repeat: int) -> dict[str, float]:
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        await work()
    return _per_call(started, cpu, repeat)


def _per_call(started: float, cpu: float, repeat: int) -> dict[str, float]:
    return {
        "wall_us": round((time.perf_counter() - started) / repeat * 1e6, 1),
        "cpu_us": round((time.process_time() - cpu) / repeat * 1e6, 1),
    }


# Crypto ceiling ----------------------------------------------------------------------------------


def crypto_limits(seconds: float = 1.0) -> dict[str, int]:
    """ES256 signatures and verifications per second on one core of this machine."""
    key = ec.generate_private_key(ec.SECP256R1())
    message = b"x" * 400  # about an access token's signing input
    signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    public = key.public_key()
    return {
        "es256_sign": _rate(lambda: key.sign(message, ec.ECDSA(hashes.SHA256())), seconds),
        "es256_verify": _rate(
            lambda: public.verify(signature, message, ec.ECDSA(hashes.SHA256())), seconds
        ),
    }


def _rate(work: Callable[[], object], seconds: float) -> int:
    done, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            work()
        done += 100
    return round(done / seconds)


async def _reset_postgres(url: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await connection.close()
