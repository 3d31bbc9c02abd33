"""Actions an agent declares it can run: a name, a description, the JSON Schema (draft 2020-12)
of its parameters, whether it is dangerous, and whether it needs a prepare (dry-run) step.

The agent declares its whole set at once (the SDK does at start-up); commands are validated
against it.
"""

from __future__ import annotations

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit import service as audit
from tabard.core import outbox
from tabard.core.context import Context
from tabard.core.errors import InvalidField
from tabard.operations.errors import ActionNotFound
from tabard.operations.models import AgentAction
from tabard.operations.schemas import ActionsDeclaration
from tabard.registry import service as registry


async def declare_actions(
    session: AsyncSession, ctx: Context, org_id: str, agent_id: str, data: ActionsDeclaration
) -> list[AgentAction]:
    """Replace the agent's actions with `data` (names unique, schemas valid)."""
    await registry.get_mutable_agent(session, org_id, agent_id)
    names = [action.name for action in data.actions]
    if len(set(names)) != len(names):
        raise InvalidField("body.actions", "action names must be unique")
    for index, action in enumerate(data.actions):
        try:
            Draft202012Validator.check_schema(action.params_schema)
        except SchemaError as exc:
            raise InvalidField(
                f"body.actions.{index}.params_schema", f"not a JSON Schema: {exc.message}"
            ) from None
    await session.execute(delete(AgentAction).where(AgentAction.agent_id == agent_id))
    now = ctx.clock.now()
    rows = [
        AgentAction(agent_id=agent_id, org_id=org_id, declared_at=now, **action.model_dump())
        for action in data.actions
    ]
    session.add_all(rows)
    details = {"agent_id": agent_id, "actions": names}
    await audit.record(
        session,
        ctx,
        action="agent.actions.declared",
        org_id=org_id,
        target=agent_id,
        details=details,
    )
    await outbox.emit(
        session,
        ctx.clock,
        type="agent.actions.declared",
        org_id=org_id,
        subject=agent_id,
        data=details,
    )
    return rows


async def list_actions(session: AsyncSession, org_id: str, agent_id: str) -> list[AgentAction]:
    await registry.get_agent(session, org_id, agent_id)
    statement = (
        select(AgentAction)
        .where(AgentAction.agent_id == agent_id, AgentAction.org_id == org_id)
        .order_by(AgentAction.name)
    )
    return list((await session.execute(statement)).scalars())


async def get_action(session: AsyncSession, org_id: str, agent_id: str, name: str) -> AgentAction:
    statement = select(AgentAction).where(
        AgentAction.agent_id == agent_id, AgentAction.org_id == org_id, AgentAction.name == name
    )
    action = (await session.execute(statement)).scalar_one_or_none()
    if action is None:
        raise ActionNotFound(f"agent {agent_id!r} has not declared an action {name!r}")
    return action


def check_params(action: AgentAction, params: dict[str, object]) -> None:
    """422 naming the first parameter that breaks the action's schema."""
    validator = Draft202012Validator(action.params_schema)
    error = next(iter(sorted(validator.iter_errors(params), key=lambda e: list(e.path))), None)
    if error is not None:
        path = [*error.path]
        if error.validator == "required" and isinstance(error.instance, dict):
            # The error sits on the object; name the property it lacks. A keyword reports its
            # missing properties in its own order, and this is the keyword's first error.
            missing = [name for name in error.validator_value if name not in error.instance]
            path.extend(missing[:1])
        raise InvalidField("body.params" + "".join(f".{part}" for part in path), error.message)
