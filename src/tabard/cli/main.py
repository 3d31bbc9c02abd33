"""The `tabard` command."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console

from tabard import __version__
from tabard.audit.chain import verify_events
from tabard.cli import events as event_stream
from tabard.cli.bootstrap import prepare_database
from tabard.core.config import ConfigError, Settings, load_settings
from tabard.core.context import SYSTEM, Context
from tabard.core.db import Database, create_engine
from tabard.core.migrations import MigrationError, status, upgrade
from tabard.signing import service as signing
from tabard.signing.algorithms import parse_algorithm
from tabard.signing.errors import SigningKeyRotationConflict
from tabard.signing.schemas import SigningKeyOut
from tabard.tenancy.errors import AdminSecretNotRotated

EXIT_CONFIG = 2
EXIT_FAILURE = 1

app = typer.Typer(help="Tabard: the open control plane for AI agents.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
audit_app = typer.Typer(help="Audit log.", no_args_is_help=True)
keys_app = typer.Typer(
    help="Signing keys (published at /.well-known/jwks.json).", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
out = Console()
err = Console(stderr=True)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(problem, markup=False, highlight=False)
        raise typer.Exit(EXIT_CONFIG) from None


def _migrate(settings: Settings) -> list[str]:
    try:
        return asyncio.run(upgrade(settings))
    except MigrationError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILURE) from None


@app.command()
def version() -> None:
    """Print the version."""
    out.print(f"tabard {__version__}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (TABARD_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (TABARD_PORT).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Apply migrations, then serve the API until SIGTERM or Ctrl+C."""
    settings = _settings()
    if workers > 1 and settings.kv_backend == "memory":
        # Revocations, DPoP replay and rate limits live in the kv store: one per worker would let
        # a revoked token or a replayed proof through on the other workers.
        err.print("--workers above 1 needs a shared kv store: set TABARD_KV_BACKEND=redis")
        raise typer.Exit(EXIT_CONFIG)
    host = host or settings.host
    port = settings.port if port is None else port
    _migrate(settings)
    try:
        generated = asyncio.run(prepare_database(settings))
    except AdminSecretNotRotated:
        err.print("TABARD_ADMIN_SECRET: still the generated first-boot secret; set a new one")
        raise typer.Exit(EXIT_CONFIG) from None
    if generated is not None:
        out.print(
            "Platform admin secret (shown once; keep it safe, or set TABARD_ADMIN_SECRET):\n"
            f"  {generated}",
            markup=False,
            highlight=False,
        )
    out.print(f"Tabard {__version__} listening on http://{host}:{port}", highlight=False)
    # uvicorn re-raises the signal it shut down on; a no-op handler makes that a clean exit 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(
        "tabard.api.app:create_app_from_env",
        factory=True,
        # One send() per response instead of two: see the module.
        http="tabard.api.http_protocol:CoalescingHttpToolsProtocol",
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        server_header=False,
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations."""
    applied = _migrate(_settings())
    out.print(f"applied: {', '.join(applied)}" if applied else "database is up to date")


@db_app.command("status")
def db_status() -> None:
    """Show the current revision and pending migrations."""
    current = asyncio.run(status(_settings()))
    out.print(f"current: {current.current or '(empty database)'}")
    out.print(f"head:    {current.head}")
    out.print(f"pending: {', '.join(current.pending) if current.pending else 'none'}")


@audit_app.command("verify")
def audit_verify(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="NDJSON export.")],
) -> None:
    """Check an audit export offline (no server needed); exit 1 if the chain is broken."""
    with file.open() as handle:
        events = (json.loads(line) for line in handle if line.strip())
        try:
            result = verify_events(events)
        except (KeyError, ValueError, TypeError) as exc:
            err.print(f"error: {file} is not a Tabard audit export ({exc})", markup=False)
            raise typer.Exit(EXIT_FAILURE) from None
    out.print_json(
        json.dumps(
            {
                "verified": result.verified,
                "checked": result.checked,
                "first_broken_id": result.first_broken_id,
            }
        )
    )
    if not result.verified:
        sys.exit(EXIT_FAILURE)


@app.command()
def events(
    url: Annotated[
        str, typer.Option(envvar="TABARD_URL", help="The server's base URL.")
    ] = "http://127.0.0.1:8000",
    token: Annotated[
        str,
        typer.Option(
            envvar="TABARD_API_KEY", help="An org API key, or the admin secret.", show_default=False
        ),
    ] = "",
    follow: Annotated[
        bool, typer.Option("--follow/--once", help="Keep reading (default), or print and exit.")
    ] = True,
    event_type: Annotated[
        list[str] | None,
        typer.Option("--type", "-t", help="Only these types; `agent.*` for a family. Repeatable."),
    ] = None,
    org: Annotated[str | None, typer.Option(help="The admin's choice of one org.")] = None,
    after: Annotated[str | None, typer.Option(help="Start after this event id.")] = None,
    last: Annotated[int, typer.Option(min=0, max=1000, help="Start this many events back.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON envelope per line.")] = False,
) -> None:
    """Print the event stream (GET /v1/events): the last events, then new ones as they happen."""
    if not token:
        err.print("set TABARD_API_KEY (an org API key or the admin secret), or pass --token")
        raise typer.Exit(EXIT_CONFIG)
    options = event_stream.StreamOptions(
        url, token, event_type or [], org, after, 0 if after else last, follow
    )
    try:
        for event in event_stream.stream(options, on_notice=lambda note: err.print(note)):
            text = json.dumps(event, separators=(",", ":")) if as_json else event_stream.line(event)
            print(text, flush=True)
    except event_stream.StreamRefused as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILURE) from None
    except KeyboardInterrupt:
        return


def _algorithm(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return parse_algorithm(value).value
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@keys_app.command("rotate")
def keys_rotate(
    algorithm: Annotated[
        str | None,
        typer.Option(
            callback=_algorithm,
            help="ES256, Ed25519 (EdDSA) or RS256 (default TABARD_SIGNING_ALGORITHM).",
        ),
    ] = None,
    revoke_previous: Annotated[
        bool,
        typer.Option(
            "--revoke-previous",
            help="Emergency: previous keys leave the JWKS now and their tokens stop verifying.",
        ),
    ] = False,
) -> None:
    """Make a new signing key active; the previous one stays published until its tokens expire."""
    settings = _settings()
    _require_current_schema(settings)
    try:
        rotation = asyncio.run(_rotate_keys(settings, algorithm, revoke_previous))
    except SigningKeyRotationConflict as exc:
        err.print(f"error: {exc.detail}", markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILURE) from None
    _say(f"active: {rotation.key.kid} ({rotation.key.alg})")
    if rotation.revoked_kids:
        _say(f"revoked: {', '.join(rotation.revoked_kids)}")
        _say("their tokens no longer verify; they left the JWKS now")
    elif rotation.previous_kid:
        until = _when(rotation.previous_publish_until)
        _say(f"retired: {rotation.previous_kid} (stays in the JWKS until {until})")


@keys_app.command("list")
def keys_list() -> None:
    """Every signing key: status and publication window (no private material)."""
    settings = _settings()
    _require_current_schema(settings)
    rows = asyncio.run(_list_keys(settings))
    _key_line("KID", "ALG", "STATUS", "CREATED", "PUBLISHED UNTIL", "REVOKED")
    for row in rows:
        _key_line(
            row.kid,
            row.alg,
            row.status,
            _when(row.created_at),
            _when(row.publish_until),
            _when(row.revoked_at),
        )


def _key_line(kid: str, alg: str, status: str, created: str, until: str, revoked: str) -> None:
    _say(f"{kid:<43}  {alg:<7}  {status:<7}  {created:<20}  {until:<20}  {revoked}")


def _say(line: str) -> None:
    # Kids are long: a wrapped line would break copy-paste and scripts reading the output.
    out.print(line, markup=False, highlight=False, soft_wrap=True)


def _require_current_schema(settings: Settings) -> None:
    current = asyncio.run(status(settings))
    if current.pending:
        err.print("error: the database schema is not current; run `tabard db upgrade` first")
        raise typer.Exit(EXIT_FAILURE)


async def _rotate_keys(
    settings: Settings, algorithm: str | None, revoke_previous: bool
) -> signing.Rotation:
    # The composition root, loaded only here: the same runtime and in-transaction wiring as the
    # server, so revoked kids also reach the token revocations.
    from tabard.api.app import build_runtime, wire_domain_hooks

    runtime = build_runtime(settings)
    wire_domain_hooks()
    ctx = Context(actor=SYSTEM, clock=runtime.clock, kv=runtime.kv)
    try:
        async with runtime.database.unit_of_work() as session:
            return await signing.rotate(
                session,
                ctx,
                runtime.keystore,
                settings,
                algorithm=algorithm,
                revoke_previous=revoke_previous,
            )
    finally:
        await runtime.kv.close()
        await runtime.bus.close()
        await runtime.database.close()


async def _list_keys(settings: Settings) -> list[SigningKeyOut]:
    database = Database(create_engine(settings))
    try:
        async with database.read_only() as session:
            return [SigningKeyOut.model_validate(row) for row in await signing.list_keys(session)]
    finally:
        await database.close()


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"
