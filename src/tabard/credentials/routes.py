"""HTTP routes for an agent's client credentials."""

from __future__ import annotations

from fastapi import APIRouter, status

from tabard.core.runtime import ContextDep, RuntimeDep
from tabard.credentials import policy, service
from tabard.credentials.schemas import (
    CredentialCreate,
    CredentialCreated,
    CredentialOut,
    CredentialRotate,
    CredentialUpdate,
)

router = APIRouter(prefix="/v1/orgs/{org_id}/agents/{agent_id}/credentials", tags=["credentials"])


def _created(credential: object, secret: str | None) -> CredentialCreated:
    return CredentialCreated(
        **CredentialOut.model_validate(credential).model_dump(), client_secret=secret
    )


@router.post("", response_model=CredentialCreated, status_code=status.HTTP_201_CREATED)
async def create_credential(
    org_id: str, agent_id: str, body: CredentialCreate, runtime: RuntimeDep, ctx: ContextDep
) -> CredentialCreated:
    """A new client credential; a client secret is in this response only."""
    policy.require_credential_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        credential, secret = await service.create_credential(
            session, ctx, runtime.settings, runtime.secret_key, org_id, agent_id, body
        )
    return _created(credential, secret)


@router.get("", response_model=list[CredentialOut])
async def list_credentials(
    org_id: str, agent_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> list[CredentialOut]:
    policy.require_credential_management(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        credentials = await service.list_credentials(session, org_id, agent_id)
    return [CredentialOut.model_validate(credential) for credential in credentials]


@router.get("/{credential_id}", response_model=CredentialOut)
async def get_credential(
    org_id: str, agent_id: str, credential_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> CredentialOut:
    policy.require_credential_management(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        credential = await service.get_credential(session, org_id, agent_id, credential_id)
    return CredentialOut.model_validate(credential)


@router.patch("/{credential_id}", response_model=CredentialOut)
async def update_credential(
    org_id: str,
    agent_id: str,
    credential_id: str,
    body: CredentialUpdate,
    runtime: RuntimeDep,
    ctx: ContextDep,
) -> CredentialOut:
    policy.require_credential_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        credential = await service.update_credential(
            session, ctx, runtime.settings, org_id, agent_id, credential_id, body
        )
    return CredentialOut.model_validate(credential)


@router.post("/{credential_id}/rotate", response_model=CredentialCreated)
async def rotate_secret(
    org_id: str,
    agent_id: str,
    credential_id: str,
    body: CredentialRotate,
    runtime: RuntimeDep,
    ctx: ContextDep,
) -> CredentialCreated:
    """A new secret (shown once); the old one stops at once unless a grace period is asked for."""
    policy.require_credential_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        credential, secret = await service.rotate_secret(
            session,
            ctx,
            runtime.secret_key,
            org_id,
            agent_id,
            credential_id,
            body.grace_period_seconds,
        )
    return _created(credential, secret)


@router.post("/{credential_id}/revoke", response_model=CredentialOut)
async def revoke_credential(
    org_id: str, agent_id: str, credential_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> CredentialOut:
    policy.require_credential_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        credential = await service.revoke_credential(session, ctx, org_id, agent_id, credential_id)
    return CredentialOut.model_validate(credential)
