"""HTTP routes of operations.

`router` is the operators' side (org key or admin): registration tokens, agent status, actions,
commands. `agent_router` is the agent's own side, authenticated by its access token (which says
who it is, so no ids in the paths): heartbeats, declaring actions, polling and answering
commands. `enrollment_router` takes a registration token instead of any credential.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from tabard.core.context import Context
from tabard.core.errors import Unauthenticated, ValidationFailed
from tabard.core.ids import REGISTRATION_TOKEN_PREFIX
from tabard.core.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page
from tabard.core.runtime import ContextDep, Runtime, RuntimeDep, get_context, get_runtime
from tabard.limits import service as limits
from tabard.operations import actions, commands, policy, registration
from tabard.operations import status as agent_status
from tabard.operations.models import Command, RegistrationToken
from tabard.operations.registration import token_status
from tabard.operations.schemas import (
    ActionOut,
    ActionsDeclaration,
    AgentStatusOut,
    CommandCreate,
    CommandOut,
    CommandProgress,
    CommandResult,
    Heartbeat,
    HeartbeatAck,
    Registered,
    Registration,
    RegistrationPreset,
    RegistrationTokenCreate,
    RegistrationTokenCreated,
    RegistrationTokenOut,
    RegistrationTokenStatus,
)
from tabard.operations.service import Operations

router = APIRouter(prefix="/v1/orgs/{org_id}", tags=["operations"])
agent_router = APIRouter(prefix="/v1/agent", tags=["agent operations"])
enrollment_router = APIRouter(tags=["agent operations"])
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
_COMMANDS = "/agents/{agent_id}/commands"
_MAX_WAIT_SECONDS = 30.0
HEARTBEAT_PATH = "/v1/agent/heartbeat"


def operations(request: Request) -> Operations:
    ops: Operations = request.app.state.operations
    return ops


def _token_out(token: RegistrationToken, now: datetime) -> RegistrationTokenOut:
    return RegistrationTokenOut(
        id=token.id,
        org_id=token.org_id,
        label=token.label,
        prefix=token.prefix,
        preset=RegistrationPreset.model_validate(token.preset),
        status=token_status(token, now),
        created_at=token.created_at,
        expires_at=token.expires_at,
        used_at=token.used_at,
        used_by_agent_id=token.used_by_agent_id,
        revoked_at=token.revoked_at,
    )


# Registration tokens and enrollment ------------------------------------------------------------


@router.post("/registration-tokens", response_model=RegistrationTokenCreated, status_code=201)
async def create_registration_token(
    org_id: str, body: RegistrationTokenCreate, runtime: RuntimeDep, ctx: ContextDep
) -> RegistrationTokenCreated:
    """A single-use token for an agent process to register with; shown in this response only."""
    policy.require_operator(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        token, secret = await registration.create_token(
            session, ctx, runtime.secret_key, org_id, body
        )
    out = _token_out(token, runtime.clock.now())
    return RegistrationTokenCreated(**out.model_dump(), token=secret)


@router.get("/registration-tokens", response_model=list[RegistrationTokenOut])
async def list_registration_tokens(
    org_id: str, runtime: RuntimeDep, ctx: ContextDep, status: RegistrationTokenStatus | None = None
) -> list[RegistrationTokenOut]:
    policy.require_operator(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        tokens = await registration.list_tokens(session, org_id)
    now = runtime.clock.now()
    listed = [_token_out(token, now) for token in tokens]
    return [item for item in listed if status is None or item.status is status]


@router.get("/registration-tokens/{token_id}", response_model=RegistrationTokenOut)
async def get_registration_token(
    org_id: str, token_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> RegistrationTokenOut:
    policy.require_operator(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        token = await registration.get_token(session, org_id, token_id)
    return _token_out(token, runtime.clock.now())


@router.delete("/registration-tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_registration_token(
    org_id: str, token_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> Response:
    policy.require_operator(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        await registration.revoke_token(session, ctx, org_id, token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@enrollment_router.post("/v1/register", response_model=Registered, status_code=201)
async def register(
    body: Registration, request: Request, runtime: RuntimeDep, ctx: ContextDep
) -> Registered:
    """An agent process registers with `Authorization: Bearer tbd_reg_…`; its credentials
    (client secret, or a certificate from its CSR) are in this response only."""
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented.startswith(REGISTRATION_TOKEN_PREFIX):
        raise Unauthenticated("send 'Authorization: Bearer <registration token>' (tbd_reg_…)")
    async with runtime.database.unit_of_work() as session:
        return await registration.register(
            session, ctx, runtime.settings, runtime.keystore, runtime.secret_key, presented, body
        )


# Status, actions, commands (operators) ---------------------------------------------------------


@router.get("/agents/{agent_id}/status", response_model=AgentStatusOut)
async def get_agent_status(
    org_id: str, agent_id: str, request: Request, runtime: RuntimeDep, ctx: ContextDep
) -> AgentStatusOut:
    """Presence computed now from heartbeats (online within the offline threshold)."""
    policy.require_operator(ctx.actor, org_id)
    ops = operations(request)
    pending = ops.heartbeats.pending_for(agent_id)  # before the read begins: see agent_status
    async with runtime.database.read_only() as session:
        return await agent_status.agent_status(
            session, pending, org_id, agent_id, runtime.clock.now(), ops.offline_threshold
        )


@router.get("/agents/{agent_id}/actions", response_model=list[ActionOut])
async def list_actions(
    org_id: str, agent_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> list[ActionOut]:
    policy.require_operator(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        rows = await actions.list_actions(session, org_id, agent_id)
    return [ActionOut.model_validate(row) for row in rows]


@router.post(_COMMANDS, response_model=list[CommandOut], status_code=201)
async def create_commands(
    org_id: str,
    agent_id: str,
    body: CommandCreate,
    request: Request,
    runtime: RuntimeDep,
    ctx: ContextDep,
) -> Response:
    """One command (or one per online instance with `all_instances`); 200 with the earlier
    command(s) when the idempotency key was seen before."""
    policy.require_operator(ctx.actor, org_id)
    ops = operations(request)
    now = runtime.clock.now()
    pending = ops.heartbeats.pending_for(agent_id)  # before the transaction reads
    async with runtime.database.unit_of_work() as session:
        online = None
        if body.all_instances:
            online = await agent_status.online_instance_ids(
                session, pending, org_id, agent_id, now, ops.offline_threshold
            )
        created, new = await commands.create_commands(session, ctx, org_id, agent_id, body, online)
    if new:
        await ops.signals.announce(agent_id)
    items = [commands.command_out(command, now).model_dump(mode="json") for command in created]
    return JSONResponse(items, status_code=201 if new else 200)


@router.get(_COMMANDS, response_model=Page[CommandOut])
async def list_commands(
    org_id: str,
    agent_id: str,
    runtime: RuntimeDep,
    ctx: ContextDep,
    cursor: str | None = None,
    limit: Limit = DEFAULT_LIMIT,
) -> Page[CommandOut]:
    """Newest first; secrets in results stay redacted here."""
    policy.require_operator(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        rows, next_cursor = await commands.list_commands(
            session, org_id, agent_id, cursor=cursor, limit=limit
        )
    now = runtime.clock.now()
    return Page[CommandOut](
        items=[commands.command_out(row, now) for row in rows], next_cursor=next_cursor
    )


@router.get(_COMMANDS + "/{command_id}", response_model=CommandOut)
async def get_command(
    org_id: str, agent_id: str, command_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> CommandOut:
    """The command; the first read after a result with secrets shows them, once."""
    policy.require_operator(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        command = await commands.get_command(session, org_id, agent_id, command_id)
    clear = await commands.reveal_once(runtime.kv, command)
    return commands.command_out(command, runtime.clock.now(), output=clear)


@router.post(_COMMANDS + "/{command_id}/cancel", response_model=CommandOut)
async def cancel_command(
    org_id: str, agent_id: str, command_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> CommandOut:
    policy.require_operator(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        command = await commands.cancel(session, ctx, org_id, agent_id, command_id)
    return commands.command_out(command, runtime.clock.now())


@router.post(_COMMANDS + "/{command_id}/retry", response_model=CommandOut, status_code=201)
async def retry_command(
    org_id: str,
    agent_id: str,
    command_id: str,
    request: Request,
    runtime: RuntimeDep,
    ctx: ContextDep,
) -> CommandOut:
    """A new command linked to a FAILED or EXPIRED ACTION_EXECUTE one."""
    policy.require_operator(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        command = await commands.retry(session, ctx, org_id, agent_id, command_id)
    await operations(request).signals.announce(agent_id)
    return commands.command_out(command, runtime.clock.now())


# The agent's own side --------------------------------------------------------------------------


@agent_router.post("/heartbeat", response_model=HeartbeatAck)
async def heartbeat(
    body: Heartbeat, request: Request, runtime: RuntimeDep, ctx: ContextDep
) -> HeartbeatAck:
    """One instance is alive. Absorbed in memory, written in batches. (Served by
    `heartbeat_endpoint` past FastAPI's router; declared here for the OpenAPI document.)"""
    return await _record_heartbeat(request, runtime, ctx, body)


async def heartbeat_endpoint(request: Request) -> Response:
    """POST /v1/agent/heartbeat for `api.hot_routes`: the fleet's hottest write skips the
    router and dependency resolution; the principal is already on the request."""
    try:
        body = Heartbeat.model_validate_json(await request.body())
    except ValidationError as exc:
        raise _validation_failed(exc) from None
    ack = await _record_heartbeat(request, get_runtime(request), get_context(request), body)
    return Response(ack.model_dump_json(), media_type="application/json")


async def _record_heartbeat(
    request: Request, runtime: Runtime, ctx: Context, body: Heartbeat
) -> HeartbeatAck:
    org_id, agent_id = policy.require_agent(ctx.actor)
    await limits.check_heartbeat_rate(
        runtime.kv, runtime.settings, runtime.clock, f"{agent_id}/{body.instance_id}"
    )
    return operations(request).heartbeats.record(org_id, agent_id, body)


def _validation_failed(exc: ValidationError) -> ValidationFailed:
    """The 422 FastAPI would answer: each error named by its `body.` field path."""
    errors = [
        {
            "field": ".".join(["body", *(str(part) for part in error["loc"])]),
            "message": error["msg"],
        }
        for error in exc.errors()
    ]
    first = errors[0] if errors else {"field": "body", "message": "invalid JSON"}
    return ValidationFailed(f"{first['field']}: {first['message']}", errors=errors)


@agent_router.put("/actions", response_model=list[ActionOut])
async def declare_actions(
    body: ActionsDeclaration, runtime: RuntimeDep, ctx: ContextDep
) -> list[ActionOut]:
    """The agent's whole set of actions (replaces what it declared before)."""
    org_id, agent_id = policy.require_agent(ctx.actor)
    async with runtime.database.unit_of_work() as session:
        rows = await actions.declare_actions(session, ctx, org_id, agent_id, body)
    return [ActionOut.model_validate(row) for row in rows]


@agent_router.get("/commands", response_model=list[CommandOut])
async def poll_commands(
    request: Request,
    runtime: RuntimeDep,
    ctx: ContextDep,
    instance_id: Annotated[str, Query(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")],
    wait: Annotated[float, Query(ge=0, le=_MAX_WAIT_SECONDS)] = 0,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> list[CommandOut]:
    """Commands for this instance, leased to it; waits up to `wait` seconds for one."""
    org_id, agent_id = policy.require_agent(ctx.actor)
    await limits.check_api_rate(runtime.kv, runtime.settings, runtime.clock, f"agent:{agent_id}")
    ops = operations(request)
    deadline = time.monotonic() + wait
    with ops.signals.listening(agent_id) as wakeup:
        while True:
            claimed = await _claim(runtime, ctx, org_id, agent_id, instance_id, limit)
            remaining = deadline - time.monotonic()
            if claimed or remaining <= 0:
                now = runtime.clock.now()
                return [commands.command_out(command, now) for command in claimed]
            await wakeup.wait(remaining)


async def _claim(
    runtime: Runtime, ctx: Context, org_id: str, agent_id: str, instance_id: str, limit: int
) -> list[Command]:
    """Claim in a write transaction only when a read says there is something to claim: idle
    long-polls of a whole fleet would otherwise queue for SQLite's one writer."""
    async with runtime.database.read_only() as session:
        if not await commands.claimable(session, org_id, agent_id, instance_id, ctx.clock.now()):
            return []
    async with runtime.database.unit_of_work() as session:
        return await commands.claim(session, ctx, org_id, agent_id, instance_id, limit)


@agent_router.post("/commands/{command_id}/running", response_model=CommandOut)
async def command_running(
    command_id: str, body: CommandProgress, runtime: RuntimeDep, ctx: ContextDep
) -> CommandOut:
    """The instance holding the command started it (or still runs it: the lease is renewed)."""
    org_id, agent_id = policy.require_agent(ctx.actor)
    async with runtime.database.unit_of_work() as session:
        command = await commands.mark_running(
            session, ctx, org_id, agent_id, command_id, body.instance_id
        )
    return commands.command_out(command, runtime.clock.now())


@agent_router.post("/commands/{command_id}/result", response_model=CommandOut)
async def command_result(
    command_id: str, body: CommandResult, runtime: RuntimeDep, ctx: ContextDep
) -> CommandOut:
    """SUCCEEDED or FAILED, with output (at most 256 KB; secrets marked by the SDK are kept
    for the operator's first read only)."""
    org_id, agent_id = policy.require_agent(ctx.actor)
    async with runtime.database.unit_of_work() as session:
        command = await commands.report_result(
            session, ctx, runtime.kv, org_id, agent_id, command_id, body.instance_id, body
        )
    return commands.command_out(command, runtime.clock.now())
