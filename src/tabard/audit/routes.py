"""HTTP routes for reading, exporting and verifying the audit log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime

from tabard.audit import policy, service
from tabard.audit.schemas import AuditEventOut, AuditVerification, Outcome
from tabard.core.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page
from tabard.core.runtime import ActorDep, RuntimeDep

router = APIRouter(prefix="/v1/audit", tags=["audit"])


def audit_filter(
    actor: ActorDep,
    org: str | None = None,
    actor_id: Annotated[str | None, Query(alias="actor")] = None,
    action: str | None = None,
    outcome: Outcome | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
) -> service.AuditFilter:
    """Query parameters shared by listing and export, confined to what the caller may see."""
    return service.AuditFilter(
        org_id=policy.audit_scope(actor, org),
        actor_id=actor_id,
        action=action,
        outcome=outcome,
        since=since,
        until=until,
    )


FilterDep = Annotated[service.AuditFilter, Depends(audit_filter)]


@router.get("", response_model=Page[AuditEventOut])
async def list_events(
    runtime: RuntimeDep,
    query: FilterDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[AuditEventOut]:
    async with runtime.database.read_only() as session:
        events, next_cursor = await service.list_events(session, query, cursor=cursor, limit=limit)
    items = [AuditEventOut.model_validate(event, from_attributes=True) for event in events]
    return Page[AuditEventOut](items=items, next_cursor=next_cursor)


@router.get("/verify", response_model=AuditVerification)
async def verify(runtime: RuntimeDep, actor: ActorDep) -> AuditVerification:
    policy.require_platform_admin(actor)
    result = await service.verify(runtime.database)
    return AuditVerification(
        verified=result.verified, checked=result.checked, first_broken_id=result.first_broken_id
    )


@router.get("/export", response_class=StreamingResponse)
async def export(runtime: RuntimeDep, query: FilterDep) -> StreamingResponse:
    """Every matching event as NDJSON, oldest first; `tabard audit verify FILE` checks it."""

    async def lines() -> AsyncIterator[bytes]:
        async for event in service.export(runtime.database, query):
            yield json.dumps(event, separators=(",", ":")).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/{event_id}", response_model=AuditEventOut)
async def get_event(event_id: str, runtime: RuntimeDep, actor: ActorDep) -> AuditEventOut:
    scope = policy.audit_scope(actor, None)
    async with runtime.database.read_only() as session:
        event = await service.get_event(session, event_id, org_id=scope)
    return AuditEventOut.model_validate(event, from_attributes=True)
