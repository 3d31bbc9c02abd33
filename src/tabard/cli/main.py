"""The `tabard` command."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console

from tabard import __version__
from tabard.audit.chain import verify_events
from tabard.cli.bootstrap import prepare_database
from tabard.core.config import ConfigError, Settings, load_settings
from tabard.core.migrations import MigrationError, status, upgrade
from tabard.tenancy.errors import AdminSecretNotRotated

EXIT_CONFIG = 2
EXIT_FAILURE = 1

app = typer.Typer(help="Tabard: the open control plane for AI agents.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
audit_app = typer.Typer(help="Audit log.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
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
