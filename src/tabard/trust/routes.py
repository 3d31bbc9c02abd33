"""HTTP routes of trust: bindings and trust settings (org-scoped), invites (platform admin), and
onboarding (public: the invite is the credential)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from tabard.core.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page
from tabard.core.runtime import ContextDep, RuntimeDep
from tabard.pki.schemas import CaOut
from tabard.tenancy.schemas import ApiKeyCreated, ApiKeyOut, OrgOut
from tabard.trust import bindings, invites, policy, settings
from tabard.trust.invites import OnboardedOrg, invite_status
from tabard.trust.models import OrgInvite
from tabard.trust.schemas import (
    AttachRequest,
    BindingCreate,
    BindingOut,
    BindingStatus,
    BindingUpdate,
    InviteCreate,
    InviteCreated,
    InviteKind,
    InviteOut,
    InviteSecret,
    InviteView,
    JoinRequest,
    Onboarded,
    TrustSettingsOut,
    TrustSettingsUpdate,
)

router = APIRouter(prefix="/v1", tags=["trust"])
public_router = APIRouter(prefix="/v1/onboarding", tags=["onboarding"])
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
_BINDING = "/orgs/{org_id}/bindings/{binding_id}"


@router.post("/orgs/{org_id}/bindings", response_model=BindingOut, status_code=201)
async def create_binding(
    org_id: str, body: BindingCreate, runtime: RuntimeDep, ctx: ContextDep
) -> BindingOut:
    """A pending binding of one of the org's agents to a scope within its capabilities."""
    policy.require_binding_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        binding = await bindings.create_binding(session, ctx, org_id, body)
    return BindingOut.model_validate(binding)


@router.get("/orgs/{org_id}/bindings", response_model=Page[BindingOut])
async def list_bindings(
    org_id: str,
    runtime: RuntimeDep,
    ctx: ContextDep,
    status: BindingStatus | None = None,
    agent_id: str | None = None,
    cursor: str | None = None,
    limit: Limit = DEFAULT_LIMIT,
) -> Page[BindingOut]:
    policy.require_binding_management(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        rows, next_cursor = await bindings.list_bindings(
            session, org_id, status=status, agent_id=agent_id, cursor=cursor, limit=limit
        )
    items = [BindingOut.model_validate(row) for row in rows]
    return Page[BindingOut](items=items, next_cursor=next_cursor)


@router.get(_BINDING, response_model=BindingOut)
async def get_binding(
    org_id: str, binding_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> BindingOut:
    policy.require_binding_management(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        binding = await bindings.get_binding(session, org_id, binding_id)
    return BindingOut.model_validate(binding)


@router.patch(_BINDING, response_model=BindingOut)
async def update_binding(
    org_id: str, binding_id: str, body: BindingUpdate, runtime: RuntimeDep, ctx: ContextDep
) -> BindingOut:
    policy.require_binding_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        binding = await bindings.update_binding(session, ctx, org_id, binding_id, body)
    return BindingOut.model_validate(binding)


@router.post(_BINDING + "/approve", response_model=BindingOut)
async def approve_binding(
    org_id: str, binding_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> BindingOut:
    policy.require_binding_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        binding = await bindings.approve_binding(session, ctx, org_id, binding_id)
    return BindingOut.model_validate(binding)


@router.post(_BINDING + "/revoke", response_model=BindingOut)
async def revoke_binding(
    org_id: str, binding_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> BindingOut:
    """The agent's live tokens end at once; its next login is refused."""
    policy.require_binding_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        binding = await bindings.revoke_binding(session, ctx, org_id, binding_id)
    return BindingOut.model_validate(binding)


@router.get("/orgs/{org_id}/trust-settings", response_model=TrustSettingsOut)
async def get_trust_settings(org_id: str, runtime: RuntimeDep, ctx: ContextDep) -> TrustSettingsOut:
    policy.require_binding_management(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        return await settings.settings_for(session, org_id)


@router.patch("/orgs/{org_id}/trust-settings", response_model=TrustSettingsOut)
async def update_trust_settings(
    org_id: str, body: TrustSettingsUpdate, runtime: RuntimeDep, ctx: ContextDep
) -> TrustSettingsOut:
    """`binding_required: true` ends the live tokens of every agent without an approved one."""
    policy.require_binding_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        return await settings.update_settings(session, ctx, org_id, body)


# Invites (platform admin) ---------------------------------------------------------------------


def _invite_out(invite: OrgInvite, now: datetime) -> InviteOut:
    return InviteOut(
        id=invite.id,
        kind=InviteKind(invite.kind),
        label=invite.label,
        org_id=invite.org_id,
        status=invite_status(invite, now),
        created_at=invite.created_at,
        expires_at=invite.expires_at,
        used_at=invite.used_at,
        revoked_at=invite.revoked_at,
    )


@router.post("/invites", response_model=InviteCreated, status_code=201)
async def create_invite(body: InviteCreate, runtime: RuntimeDep, ctx: ContextDep) -> InviteCreated:
    """A single-use invite; its secret is in this response only."""
    policy.require_invite_management(ctx.actor)
    async with runtime.database.unit_of_work() as session:
        invite, secret = await invites.create_invite(session, ctx, body)
    out = _invite_out(invite, runtime.clock.now())
    return InviteCreated(**out.model_dump(), invite=secret)


@router.get("/invites", response_model=list[InviteOut])
async def list_invites(runtime: RuntimeDep, ctx: ContextDep) -> list[InviteOut]:
    policy.require_invite_management(ctx.actor)
    async with runtime.database.read_only() as session:
        rows = await invites.list_invites(session)
    return [_invite_out(row, runtime.clock.now()) for row in rows]


@router.get("/invites/{invite_id}", response_model=InviteOut)
async def get_invite(invite_id: str, runtime: RuntimeDep, ctx: ContextDep) -> InviteOut:
    policy.require_invite_management(ctx.actor)
    async with runtime.database.read_only() as session:
        invite = await invites.get_invite(session, invite_id)
    return _invite_out(invite, runtime.clock.now())


@router.delete("/invites/{invite_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_invite(invite_id: str, runtime: RuntimeDep, ctx: ContextDep) -> Response:
    policy.require_invite_management(ctx.actor)
    async with runtime.database.unit_of_work() as session:
        await invites.revoke_invite(session, ctx, invite_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# Onboarding (public: the invite is the credential) --------------------------------------------


def _onboarded(result: OnboardedOrg) -> Onboarded:
    key = ApiKeyOut.model_validate(result.key).model_dump()
    return Onboarded(
        org=OrgOut.model_validate(result.org),
        api_key=ApiKeyCreated(**key, secret=result.secret),
        ca=CaOut.of(result.ca) if result.ca is not None else None,
    )


@public_router.post("/inspect", response_model=InviteView)
async def inspect_invite(body: InviteSecret, runtime: RuntimeDep) -> InviteView:
    """What an invite is for; inspecting does not use it."""
    async with runtime.database.read_only() as session:
        invite = await invites.inspect_invite(session, body.invite, runtime.clock.now())
    return InviteView(
        kind=InviteKind(invite.kind),
        label=invite.label,
        org_id=invite.org_id,
        expires_at=invite.expires_at,
    )


@public_router.post("/join", response_model=Onboarded, status_code=201)
async def join(body: JoinRequest, runtime: RuntimeDep, ctx: ContextDep) -> Onboarded:
    """Apply as a new org with a join invite: `pending` until the platform admin decides."""
    async with runtime.database.unit_of_work() as session:
        result = await invites.join(session, ctx, runtime.keystore, runtime.secret_key, body)
    return _onboarded(result)


@public_router.post("/attach", response_model=Onboarded, status_code=201)
async def attach(body: AttachRequest, runtime: RuntimeDep, ctx: ContextDep) -> Onboarded:
    """Attach a CA to the org named by an attach invite and receive its first API key."""
    async with runtime.database.unit_of_work() as session:
        result = await invites.attach(session, ctx, runtime.keystore, runtime.secret_key, body)
    return _onboarded(result)
