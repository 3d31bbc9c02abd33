"""An agent process managed by Tabard: it registers once, heartbeats, and runs the commands
operators send it. See examples/README.md for the two-terminal walk-through.

    TABARD_URL=http://127.0.0.1:8080 TABARD_REGISTRATION_TOKEN=tbd_reg_… \\
        python examples/worker_agent.py
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from typing import Any

from tabard.sdk import ActionContext, ActionFailed, AgentError, TokenFileError, secret
from tabard.sdk.agent import from_environment

agent = from_environment(
    name=None,  # taken from the registration token's preset, or a generated one
    version="1.0.0",
    heartbeat_interval=float(os.environ.get("HEARTBEAT_INTERVAL", "30")),
)


@agent.action(
    "echo",
    description="Answer with the parameters it was given.",
    params_schema={"type": "object", "properties": {"message": {"type": "string"}}},
)
async def echo(ctx: ActionContext) -> dict[str, Any]:
    return {"echo": ctx.params.get("message", "")}


@agent.action(
    "rotate-api-key",
    description="Make a new API key for the service this agent runs; shown to the operator once.",
    dangerous=True,
)
async def rotate_api_key(ctx: ActionContext) -> dict[str, Any]:
    return {"api_key": secret(f"sk_{secrets.token_urlsafe(24)}"), "rotated": True}


@agent.action(
    "purge-cache",
    description="Delete cached entries older than `days` (needs a prepare step first).",
    params_schema={
        "type": "object",
        "properties": {"days": {"type": "integer", "minimum": 1}},
        "required": ["days"],
    },
    dangerous=True,
    requires_prepare=True,
)
async def purge_cache(ctx: ActionContext) -> dict[str, Any]:
    days = int(ctx.params["days"])
    if days > 365:
        raise ActionFailed("OUT_OF_RANGE", "refusing to look back more than a year")
    would_delete = days * 10
    if ctx.prepare:
        return {"would_delete": would_delete}
    return {"deleted": would_delete}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        asyncio.run(agent.run())
    except (AgentError, TokenFileError) as problem:
        raise SystemExit(f"error: {problem}") from None
