"""Commands: an operator asks an agent to run (`ACTION_EXECUTE`) or dry-run (`ACTION_PREPARE`)
one of its declared actions.

    PENDING → DISPATCHED → RUNNING → SUCCEEDED | FAILED
    PENDING | DISPATCHED → EXPIRED          (at `expires_at`; reads show it at once)
    PENDING → CANCELLED

An instance claims pending commands by long-polling; a claim is a lease, given to one instance
exactly once (a conditional UPDATE: of racing pollers, one wins). An instance that dies lets its
lease lapse: the command is offered again while attempts remain, then fails (`LEASE_EXPIRED`).
A moved-on command answers 409 `COMMAND_ALREADY_COMPLETED` (terminal) or
`COMMAND_INVALID_TRANSITION`.

Secrets in a result (values the SDK wraps as `{"__tabard_secret__": value}`) are never stored:
the row, every later read, the logs and the audit log hold "[REDACTED]"; the clear output lives
only in the kv store for 5 minutes and goes to the first read of the command.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit import service as audit
from tabard.core import outbox
from tabard.core.context import Context
from tabard.core.errors import InvalidField
from tabard.core.ids import new_id
from tabard.core.kv import KeyValueStore
from tabard.core.pagination import DEFAULT_LIMIT, decode_cursor, page_of
from tabard.operations import actions
from tabard.operations.errors import (
    CommandAlreadyCompleted,
    CommandInvalidTransition,
    CommandNotFound,
    CommandNotRetryable,
    CommandPrepareRequired,
    NoOnlineInstance,
)
from tabard.operations.models import Command
from tabard.operations.schemas import (
    MAX_OUTPUT_BYTES,
    TERMINAL_STATES,
    CommandCreate,
    CommandError,
    CommandOut,
    CommandResult,
    CommandState,
    CommandType,
)
from tabard.registry import service as registry

SECRET_MARKER = "__tabard_secret__"  # noqa: S105 - the marker's key, not a secret
REDACTED = "[REDACTED]"
SECRET_TTL_SECONDS = 300.0
LEASE_EXPIRED = "LEASE_EXPIRED"
_EXPIRABLE = (CommandState.PENDING.value, CommandState.DISPATCHED.value)
_LEASED = (CommandState.DISPATCHED.value, CommandState.RUNNING.value)


def effective_state(command: Command, now: datetime) -> CommandState:
    """The state as of `now`: a pending or dispatched command past its expiry is EXPIRED."""
    if command.state in _EXPIRABLE and command.expires_at <= now:
        return CommandState.EXPIRED
    return CommandState(command.state)


def command_out(command: Command, now: datetime, output: Any = None) -> CommandOut:
    error = None
    if command.error_code is not None:
        error = CommandError(code=command.error_code, message=command.error_message or "")
    return CommandOut(
        id=command.id,
        org_id=command.org_id,
        agent_id=command.agent_id,
        instance_id=command.instance_id,
        type=CommandType(command.type),
        action=command.action,
        params=command.params,
        state=effective_state(command, now),
        idempotency_key=command.idempotency_key,
        prepare_command_id=command.prepare_command_id,
        retry_of=command.retry_of,
        attempts=command.attempts,
        max_attempts=command.max_attempts,
        leased_to=command.leased_to,
        created_by=command.created_by,
        created_at=command.created_at,
        expires_at=command.expires_at,
        dispatched_at=command.dispatched_at,
        started_at=command.started_at,
        finished_at=command.finished_at,
        output=command.output if output is None else output,
        error=error,
    )


async def create_commands(
    session: AsyncSession,
    ctx: Context,
    org_id: str,
    agent_id: str,
    data: CommandCreate,
    online_instances: list[str] | None = None,
) -> tuple[list[Command], bool]:
    """The new command(s) and True, or the earlier command(s) of the same idempotency key and
    False. With `all_instances`, one command per instance in `online_instances`."""
    agent = await registry.get_mutable_agent(session, org_id, agent_id)
    action = await actions.get_action(session, org_id, agent.id, data.action)
    actions.check_params(action, data.params)
    if data.type is CommandType.ACTION_EXECUTE and action.requires_prepare:
        await _check_prepared(session, org_id, agent.id, data)
    targets: list[str | None] = [data.instance_id]
    if data.all_instances:
        if not online_instances:
            raise NoOnlineInstance(f"agent {agent_id!r} has no online instance")
        targets = list(online_instances)
    commands, created = [], False
    for target in targets:
        key = _instance_key(data.idempotency_key, target, data.all_instances)
        command = await _by_idempotency_key(session, agent.id, key)
        if command is None:
            command, inserted = await _insert(session, ctx, org_id, agent.id, data, target, key)
            created = created or inserted
        commands.append(command)
    return commands, created


def _instance_key(key: str | None, target: str | None, fan_out: bool) -> str | None:
    return f"{key}#{target}" if key is not None and fan_out else key


async def _insert(
    session: AsyncSession,
    ctx: Context,
    org_id: str,
    agent_id: str,
    data: CommandCreate,
    instance_id: str | None,
    idempotency_key: str | None,
    retry_of: str | None = None,
) -> tuple[Command, bool]:
    """The new command and True; or, when a concurrent request with the same idempotency key
    won the race, that one and False."""
    now = ctx.clock.now()
    command = Command(
        id=new_id(),
        org_id=org_id,
        agent_id=agent_id,
        instance_id=instance_id,
        type=data.type.value,
        action=data.action,
        params=data.params,
        state=CommandState.PENDING.value,
        idempotency_key=idempotency_key,
        prepare_command_id=data.prepare_command_id,
        retry_of=retry_of,
        max_attempts=data.max_attempts,
        attempts=0,
        lease_seconds=data.lease_seconds,
        created_by=f"{ctx.actor.kind.value}:{ctx.actor.id}",
        created_at=now,
        expires_at=now + timedelta(seconds=data.expires_in),
        has_secrets=False,
    )
    try:
        async with session.begin_nested():
            session.add(command)
    except IntegrityError:
        earlier = await _by_idempotency_key(session, agent_id, idempotency_key)
        if earlier is None:
            raise
        return earlier, False
    await _changed(session, ctx, "command.created", command)
    return command, True


async def _by_idempotency_key(
    session: AsyncSession, agent_id: str, key: str | None
) -> Command | None:
    if key is None:
        return None
    statement = select(Command).where(Command.agent_id == agent_id, Command.idempotency_key == key)
    return (await session.execute(statement)).scalar_one_or_none()


async def _check_prepared(
    session: AsyncSession, org_id: str, agent_id: str, data: CommandCreate
) -> None:
    prepared = None
    if data.prepare_command_id is not None:
        prepared = await _find(session, org_id, agent_id, data.prepare_command_id)
    if (
        prepared is None
        or prepared.type != CommandType.ACTION_PREPARE.value
        or prepared.action != data.action
        or prepared.params != data.params
        or prepared.state != CommandState.SUCCEEDED.value
    ):
        raise CommandPrepareRequired(
            f"action {data.action!r} needs prepare_command_id: a succeeded ACTION_PREPARE "
            "of the same action and params"
        )


async def get_command(
    session: AsyncSession, org_id: str, agent_id: str, command_id: str, *, lock: bool = False
) -> Command:
    """The command; with `lock`, its row stays locked until the unit of work ends, so a state
    change checked here cannot race a claim, a sweep or another answer."""
    command = await _find(session, org_id, agent_id, command_id, lock=lock)
    if command is None:
        raise CommandNotFound(f"no command {command_id!r}")
    return command


async def _find(
    session: AsyncSession, org_id: str, agent_id: str, command_id: str, *, lock: bool = False
) -> Command | None:
    statement = select(Command).where(
        Command.id == command_id, Command.org_id == org_id, Command.agent_id == agent_id
    )
    if lock:
        statement = statement.with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


async def list_commands(
    session: AsyncSession,
    org_id: str,
    agent_id: str,
    *,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> tuple[list[Command], str | None]:
    await registry.get_agent(session, org_id, agent_id)
    statement = select(Command).where(Command.org_id == org_id, Command.agent_id == agent_id)
    after = decode_cursor(cursor)
    if after is not None:
        statement = statement.where(Command.id < str(after))
    statement = statement.order_by(Command.id.desc()).limit(limit + 1)
    return page_of(list((await session.execute(statement)).scalars()), limit, lambda c: c.id)


async def cancel(
    session: AsyncSession, ctx: Context, org_id: str, agent_id: str, command_id: str
) -> Command:
    command = await get_command(session, org_id, agent_id, command_id, lock=True)
    _require(command, ctx.clock.now(), (CommandState.PENDING,), "cancelled")
    command.state = CommandState.CANCELLED.value
    command.finished_at = ctx.clock.now()
    await _changed(session, ctx, "command.cancelled", command)
    return command


async def retry(
    session: AsyncSession, ctx: Context, org_id: str, agent_id: str, command_id: str
) -> Command:
    """A new command like a failed or expired ACTION_EXECUTE one, linked to it."""
    command = await get_command(session, org_id, agent_id, command_id)
    state = effective_state(command, ctx.clock.now())
    if command.type != CommandType.ACTION_EXECUTE.value or state not in (
        CommandState.FAILED,
        CommandState.EXPIRED,
    ):
        raise CommandNotRetryable(
            f"command {command_id!r} is a {state.value} {command.type}; only FAILED or "
            "EXPIRED ACTION_EXECUTE commands can be retried"
        )
    lifetime = int((command.expires_at - command.created_at).total_seconds())
    data = CommandCreate(
        type=CommandType.ACTION_EXECUTE,
        action=command.action,
        params=command.params,
        instance_id=command.instance_id,
        expires_in=max(5, lifetime),
        prepare_command_id=command.prepare_command_id,
        max_attempts=command.max_attempts,
        lease_seconds=command.lease_seconds,
    )
    new, _ = await _insert(
        session, ctx, org_id, agent_id, data, command.instance_id, None, retry_of=command.id
    )
    return new


# The agent's side ------------------------------------------------------------------------------


async def claim(
    session: AsyncSession,
    ctx: Context,
    org_id: str,
    agent_id: str,
    instance_id: str,
    limit: int,
) -> list[Command]:
    """Lease up to `limit` pending commands of the agent to `instance_id`, oldest first."""
    now = ctx.clock.now()
    await _requeue_lapsed(session, ctx, agent_id, now)
    statement = (
        select(Command.id, Command.lease_seconds)
        .where(
            Command.agent_id == agent_id,
            Command.org_id == org_id,
            Command.state == CommandState.PENDING.value,
            Command.expires_at > now,
            or_(Command.instance_id.is_(None), Command.instance_id == instance_id),
        )
        .order_by(Command.created_at, Command.id)
        .limit(limit)
    )
    claimed = []
    for command_id, lease_seconds in (await session.execute(statement)).all():
        leased = await session.execute(
            update(Command)
            .where(Command.id == command_id, Command.state == CommandState.PENDING.value)
            .values(
                state=CommandState.DISPATCHED.value,
                leased_to=instance_id,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                attempts=Command.attempts + 1,
                dispatched_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if getattr(leased, "rowcount", 0) == 1:
            claimed.append(command_id)
    if not claimed:
        return []
    rows = await session.execute(
        select(Command).where(Command.id.in_(claimed)).execution_options(populate_existing=True)
    )
    return sorted(rows.scalars(), key=lambda c: (c.created_at, c.id))


async def claimable(
    session: AsyncSession, org_id: str, agent_id: str, instance_id: str, now: datetime
) -> bool:
    """Whether `claim` would find anything: a pending command for the instance, or a lapsed
    lease to take back."""
    pending = select(Command.id).where(
        Command.agent_id == agent_id,
        Command.org_id == org_id,
        Command.state == CommandState.PENDING.value,
        Command.expires_at > now,
        or_(Command.instance_id.is_(None), Command.instance_id == instance_id),
    )
    lapsed = select(Command.id).where(
        Command.agent_id == agent_id,
        Command.state.in_(_LEASED),
        Command.lease_expires_at <= now,
    )
    for statement in (pending, lapsed):
        if (await session.execute(statement.limit(1))).first() is not None:
            return True
    return False


async def _requeue_lapsed(
    session: AsyncSession, ctx: Context, agent_id: str | None, now: datetime
) -> int:
    """Leases that lapsed: offered again while attempts remain, else FAILED. A dispatched one
    past its expiry becomes EXPIRED, as reads already show it."""
    statement = select(Command).where(Command.state.in_(_LEASED), Command.lease_expires_at <= now)
    if agent_id is not None:
        statement = statement.where(Command.agent_id == agent_id)
    lapsed = list((await session.execute(statement.with_for_update(skip_locked=True))).scalars())
    for command in lapsed:
        if effective_state(command, now) is CommandState.EXPIRED:
            await _expire(session, ctx, command)
            continue
        command.leased_to, command.lease_expires_at = None, None
        if command.attempts < command.max_attempts and command.expires_at > now:
            command.state = CommandState.PENDING.value
            await _changed(session, ctx, "command.requeued", command)
        else:
            command.state = CommandState.FAILED.value
            command.error_code, command.finished_at = LEASE_EXPIRED, now
            command.error_message = "the instance holding the command stopped answering"
            await _changed(session, ctx, "command.failed", command)
    return len(lapsed)


async def mark_running(
    session: AsyncSession,
    ctx: Context,
    org_id: str,
    agent_id: str,
    command_id: str,
    instance_id: str,
) -> Command:
    """DISPATCHED → RUNNING (again while running: renews the lease)."""
    command = await get_command(session, org_id, agent_id, command_id, lock=True)
    now = ctx.clock.now()
    _require(command, now, (CommandState.DISPATCHED, CommandState.RUNNING), "running")
    _require_lease(command, instance_id)
    if command.state == CommandState.DISPATCHED.value:
        command.state, command.started_at = CommandState.RUNNING.value, now
        await _changed(session, ctx, "command.running", command)
    command.lease_expires_at = now + timedelta(seconds=command.lease_seconds)
    return command


async def report_result(
    session: AsyncSession,
    ctx: Context,
    kv: KeyValueStore,
    org_id: str,
    agent_id: str,
    command_id: str,
    instance_id: str,
    result: CommandResult,
) -> Command:
    """SUCCEEDED or FAILED, with the output (secrets kept out of the row) and timings."""
    command = await get_command(session, org_id, agent_id, command_id, lock=True)
    now = ctx.clock.now()
    _require(command, now, (CommandState.DISPATCHED, CommandState.RUNNING), result.status)
    _require_lease(command, instance_id)
    clear = json.dumps(result.output, separators=(",", ":"))
    if len(clear.encode()) > MAX_OUTPUT_BYTES:
        raise InvalidField("body.output", f"larger than {MAX_OUTPUT_BYTES} bytes")
    stored, has_secrets = _redacted(result.output)
    if has_secrets:
        await kv.set(_secret_key(command.id), _revealed(result.output).encode(), SECRET_TTL_SECONDS)
    command.state = result.status
    command.output, command.has_secrets = stored, has_secrets
    command.started_at = command.started_at or result.started_at or command.dispatched_at
    command.finished_at = result.finished_at or now
    command.leased_to, command.lease_expires_at = None, None
    if result.error is not None:
        command.error_code, command.error_message = result.error.code, result.error.message
    event = "command.succeeded" if result.status == "SUCCEEDED" else "command.failed"
    await _changed(session, ctx, event, command)
    return command


async def reveal_once(kv: KeyValueStore, command: Command) -> Any:
    """The clear output for the first read after the result (None once it was read or its
    5 minutes are over: then the row's redacted output is all there is)."""
    if not command.has_secrets:
        return None
    clear = await kv.take(_secret_key(command.id))
    return None if clear is None else json.loads(clear)


async def sweep(session: AsyncSession, ctx: Context) -> int:
    """Persist what reads already show: expired commands, and lapsed leases."""
    now = ctx.clock.now()
    statement = select(Command).where(Command.state.in_(_EXPIRABLE), Command.expires_at <= now)
    expired = list((await session.execute(statement.with_for_update(skip_locked=True))).scalars())
    for command in expired:
        await _expire(session, ctx, command)
    return len(expired) + await _requeue_lapsed(session, ctx, None, now)


async def _expire(session: AsyncSession, ctx: Context, command: Command) -> None:
    command.state, command.finished_at = CommandState.EXPIRED.value, command.expires_at
    command.leased_to, command.lease_expires_at = None, None
    await _changed(session, ctx, "command.expired", command)


def _require(
    command: Command, now: datetime, allowed: tuple[CommandState, ...], target: str
) -> None:
    state = effective_state(command, now)
    if state in TERMINAL_STATES:
        raise CommandAlreadyCompleted(f"command {command.id!r} is already {state.value}")
    if state not in allowed:
        raise CommandInvalidTransition(
            f"command {command.id!r} is {state.value}; it cannot become {target}"
        )


def _require_lease(command: Command, instance_id: str) -> None:
    if command.leased_to != instance_id:
        raise CommandInvalidTransition(
            f"command {command.id!r} is leased to another instance, not {instance_id!r}"
        )


def _redacted(value: Any) -> tuple[Any, bool]:
    """`value` with every secret marker replaced by "[REDACTED]", and whether there was one."""
    if isinstance(value, dict):
        if set(value) == {SECRET_MARKER}:
            return REDACTED, True
        pairs = {key: _redacted(item) for key, item in value.items()}
        return {key: pair[0] for key, pair in pairs.items()}, any(p[1] for p in pairs.values())
    if isinstance(value, list):
        items = [_redacted(item) for item in value]
        return [item[0] for item in items], any(item[1] for item in items)
    return value, False


def _revealed(value: Any) -> str:
    def unwrap(item: Any) -> Any:
        if isinstance(item, dict):
            if set(item) == {SECRET_MARKER}:
                return item[SECRET_MARKER]
            return {key: unwrap(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [unwrap(inner) for inner in item]
        return item

    return json.dumps(unwrap(value), separators=(",", ":"))


def _secret_key(command_id: str) -> str:
    return f"cmd:secret:{command_id}"


async def _changed(session: AsyncSession, ctx: Context, action: str, command: Command) -> None:
    details: dict[str, Any] = {
        "command_id": command.id,
        "agent_id": command.agent_id,
        "type": command.type,
        "action": command.action,
        "state": command.state,
        "instance_id": command.leased_to or command.instance_id,
        "attempts": command.attempts,
    }
    if command.error_code is not None:
        details["error_code"] = command.error_code
    if command.retry_of is not None:
        details["retry_of"] = command.retry_of
    await audit.record(
        session, ctx, action=action, org_id=command.org_id, target=command.id, details=details
    )
    await outbox.emit(
        session, ctx.clock, type=action, org_id=command.org_id, subject=command.id, data=details
    )
