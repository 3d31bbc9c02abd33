"""HTTP routes for organizations and org API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from tabard.core.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page
from tabard.core.runtime import ActorDep, ContextDep, RuntimeDep
from tabard.tenancy import policy, service
from tabard.tenancy.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    OrgCreate,
    OrgOut,
    OrgUpdate,
    PrincipalOut,
)
from tabard.tenancy.service import OrgTransition

router = APIRouter(prefix="/v1", tags=["organizations"])
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


@router.get("/me", response_model=PrincipalOut)
async def whoami(actor: ActorDep) -> PrincipalOut:
    """The authenticated principal (a cheap authenticated call, handy for smoke tests)."""
    return PrincipalOut(kind=actor.kind.value, id=actor.id, org_id=actor.org_id)


@router.post("/orgs", response_model=OrgOut, status_code=status.HTTP_201_CREATED)
async def create_org(body: OrgCreate, runtime: RuntimeDep, ctx: ContextDep) -> OrgOut:
    policy.require_platform_admin(ctx.actor)
    async with runtime.database.unit_of_work() as session:
        org = await service.create_org(session, ctx, body)
    return OrgOut.model_validate(org)


@router.get("/orgs", response_model=Page[OrgOut])
async def list_orgs(
    runtime: RuntimeDep, ctx: ContextDep, cursor: str | None = None, limit: Limit = DEFAULT_LIMIT
) -> Page[OrgOut]:
    policy.require_platform_admin(ctx.actor)
    async with runtime.database.read_only() as session:
        orgs, next_cursor = await service.list_orgs(session, cursor=cursor, limit=limit)
    return Page[OrgOut](items=[OrgOut.model_validate(o) for o in orgs], next_cursor=next_cursor)


@router.get("/orgs/{org_id}", response_model=OrgOut)
async def get_org(org_id: str, runtime: RuntimeDep, ctx: ContextDep) -> OrgOut:
    policy.require_org_access(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        org = await service.get_org(session, org_id)
    return OrgOut.model_validate(org)


@router.patch("/orgs/{org_id}", response_model=OrgOut)
async def update_org(org_id: str, body: OrgUpdate, runtime: RuntimeDep, ctx: ContextDep) -> OrgOut:
    policy.require_platform_admin(ctx.actor)
    async with runtime.database.unit_of_work() as session:
        org = await service.update_org(session, ctx, org_id, body)
    return OrgOut.model_validate(org)


async def _move(
    runtime: RuntimeDep, ctx: ContextDep, org_id: str, transition: OrgTransition
) -> OrgOut:
    policy.require_platform_admin(ctx.actor)
    async with runtime.database.unit_of_work() as session:
        org = await service.set_org_status(session, ctx, org_id, transition)
    return OrgOut.model_validate(org)


@router.post("/orgs/{org_id}/suspend", response_model=OrgOut)
async def suspend_org(org_id: str, runtime: RuntimeDep, ctx: ContextDep) -> OrgOut:
    """active → suspended: its keys get 403 and every token of its agents dies at once."""
    return await _move(runtime, ctx, org_id, OrgTransition.SUSPEND)


@router.post("/orgs/{org_id}/reactivate", response_model=OrgOut)
async def reactivate_org(org_id: str, runtime: RuntimeDep, ctx: ContextDep) -> OrgOut:
    """suspended → active."""
    return await _move(runtime, ctx, org_id, OrgTransition.REACTIVATE)


@router.post("/orgs/{org_id}/approve", response_model=OrgOut)
async def approve_org(org_id: str, runtime: RuntimeDep, ctx: ContextDep) -> OrgOut:
    """pending → active: an org that applied to join may now authenticate."""
    return await _move(runtime, ctx, org_id, OrgTransition.APPROVE)


@router.post("/orgs/{org_id}/reject", response_model=OrgOut)
async def reject_org(org_id: str, runtime: RuntimeDep, ctx: ContextDep) -> OrgOut:
    """pending → rejected (final): its keys never work."""
    return await _move(runtime, ctx, org_id, OrgTransition.REJECT)


@router.delete("/orgs/{org_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_org(org_id: str, runtime: RuntimeDep, ctx: ContextDep) -> Response:
    policy.require_platform_admin(ctx.actor)
    async with runtime.database.unit_of_work() as session:
        await service.delete_org(session, ctx, org_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/orgs/{org_id}/keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED
)
async def create_api_key(
    org_id: str, body: ApiKeyCreate, runtime: RuntimeDep, ctx: ContextDep
) -> ApiKeyCreated:
    policy.require_org_access(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        key, secret = await service.create_api_key(session, ctx, runtime.secret_key, org_id, body)
    return ApiKeyCreated(**ApiKeyOut.model_validate(key).model_dump(), secret=secret)


@router.get("/orgs/{org_id}/keys", response_model=list[ApiKeyOut])
async def list_api_keys(org_id: str, runtime: RuntimeDep, ctx: ContextDep) -> list[ApiKeyOut]:
    policy.require_org_access(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        keys = await service.list_api_keys(session, org_id)
    return [ApiKeyOut.model_validate(key) for key in keys]


@router.delete("/orgs/{org_id}/keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_key(
    org_id: str, key_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> Response:
    policy.require_org_access(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        await service.revoke_api_key(session, ctx, org_id, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
