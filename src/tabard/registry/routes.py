"""HTTP routes of the registry: agents and their keys (org-scoped), and their public documents."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import JSONResponse

from tabard.core.metrics import AGENTS_REGISTERED, DID_DOCUMENTS_SERVED
from tabard.core.pagination import Page
from tabard.core.runtime import ContextDep, RuntimeDep
from tabard.registry import discovery, documents, keys, policy, service
from tabard.registry.did import DID_CONTENT_TYPE
from tabard.registry.schemas import (
    AgentCreate,
    AgentFilters,
    AgentKeyCreate,
    AgentKeyGenerated,
    AgentKeyOut,
    AgentOut,
    AgentStatus,
    AgentUpdate,
    DiscoveryQuery,
)
from tabard.signing import service as signing_keys

router = APIRouter(prefix="/v1/orgs/{org_id}/agents", tags=["agents"])
# Served to anyone; a caller who authenticates also sees its org's private agents.
public_router = APIRouter(tags=["agent documents"])


@router.post("", response_model=AgentOut, status_code=status.HTTP_201_CREATED)
async def create_agent(
    org_id: str, body: AgentCreate, runtime: RuntimeDep, ctx: ContextDep, response: Response
) -> AgentOut:
    policy.require_agent_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        agent = await service.create_agent(session, ctx, runtime.settings, org_id, body)
    AGENTS_REGISTERED.labels(agent.environment).inc()
    response.headers["Location"] = f"/v1/orgs/{org_id}/agents/{agent.id}"
    return AgentOut.model_validate(agent)


@router.get("", response_model=Page[AgentOut])
async def list_agents(
    org_id: str, filters: Annotated[AgentFilters, Query()], runtime: RuntimeDep, ctx: ContextDep
) -> Page[AgentOut]:
    policy.require_agent_management(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        agents, next_cursor = await discovery.list_org_agents(session, org_id, filters)
    return Page[AgentOut](
        items=[AgentOut.model_validate(a) for a in agents], next_cursor=next_cursor
    )


@router.get("/{agent_id}", response_model=AgentOut)
async def get_agent(org_id: str, agent_id: str, runtime: RuntimeDep, ctx: ContextDep) -> AgentOut:
    policy.require_agent_management(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        agent = await service.get_agent(session, org_id, agent_id)
    return AgentOut.model_validate(agent)


@router.patch("/{agent_id}", response_model=AgentOut)
async def update_agent(
    org_id: str, agent_id: str, body: AgentUpdate, runtime: RuntimeDep, ctx: ContextDep
) -> AgentOut:
    policy.require_agent_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        agent = await service.update_agent(session, ctx, org_id, agent_id, body)
    return AgentOut.model_validate(agent)


async def _move(
    org_id: str, agent_id: str, target: AgentStatus, runtime: RuntimeDep, ctx: ContextDep
) -> AgentOut:
    policy.require_agent_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        agent = await service.set_status(session, ctx, org_id, agent_id, target)
    return AgentOut.model_validate(agent)


@router.post("/{agent_id}/suspend", response_model=AgentOut)
async def suspend_agent(
    org_id: str, agent_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> AgentOut:
    return await _move(org_id, agent_id, AgentStatus.SUSPENDED, runtime, ctx)


@router.post("/{agent_id}/reactivate", response_model=AgentOut)
async def reactivate_agent(
    org_id: str, agent_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> AgentOut:
    return await _move(org_id, agent_id, AgentStatus.ACTIVE, runtime, ctx)


@router.post("/{agent_id}/decommission", response_model=AgentOut)
async def decommission_agent(
    org_id: str, agent_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> AgentOut:
    """Final: credentials and keys are revoked, the DID is deactivated, the name stays reserved."""
    return await _move(org_id, agent_id, AgentStatus.DECOMMISSIONED, runtime, ctx)


@router.post(
    "/{agent_id}/keys",
    response_model=AgentKeyOut | AgentKeyGenerated,
    status_code=status.HTTP_201_CREATED,
)
async def add_key(
    org_id: str, agent_id: str, body: AgentKeyCreate, runtime: RuntimeDep, ctx: ContextDep
) -> AgentKeyOut | AgentKeyGenerated:
    """Register a public key, or generate a pair (the private key is in this response only)."""
    policy.require_agent_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        key, private_jwk = await keys.add_key(session, ctx, org_id, agent_id, body)
    out = AgentKeyOut.model_validate(key)
    if private_jwk is None:
        return out
    return AgentKeyGenerated(**out.model_dump(), private_jwk=private_jwk)


@router.get("/{agent_id}/keys", response_model=list[AgentKeyOut])
async def list_keys(
    org_id: str, agent_id: str, runtime: RuntimeDep, ctx: ContextDep
) -> list[AgentKeyOut]:
    policy.require_agent_management(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        agent_keys = await keys.list_keys(session, org_id, agent_id)
    return [AgentKeyOut.model_validate(key) for key in agent_keys]


@router.delete("/{agent_id}/keys/{kid}", response_model=AgentKeyOut)
async def revoke_key(
    org_id: str, agent_id: str, kid: str, runtime: RuntimeDep, ctx: ContextDep
) -> AgentKeyOut:
    policy.require_agent_management(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        key = await keys.revoke_key(session, ctx, org_id, agent_id, kid)
    return AgentKeyOut.model_validate(key)


@public_router.get("/v1/discovery/agents", response_model=Page[AgentOut])
async def discover_agents(
    query: Annotated[DiscoveryQuery, Query()], runtime: RuntimeDep, ctx: ContextDep
) -> Page[AgentOut]:
    """Search the registry: public agents of every org, and all of the caller's own."""
    async with runtime.database.read_only() as session:
        agents, next_cursor = await discovery.search(session, ctx.actor, query)
    return Page[AgentOut](
        items=[AgentOut.model_validate(a) for a in agents], next_cursor=next_cursor
    )


@public_router.get("/agents/{agent_id}/did.json")
async def agent_did_document(agent_id: str, runtime: RuntimeDep, ctx: ContextDep) -> JSONResponse:
    """The agent's DID document, where did:web resolution looks for it."""
    async with runtime.database.read_only() as session:
        document = await documents.agent_did_document(
            session, ctx.actor, runtime.settings, agent_id
        )
    DID_DOCUMENTS_SERVED.inc()
    return JSONResponse(document, media_type=DID_CONTENT_TYPE)


@public_router.get("/.well-known/did.json")
async def registry_did_document(runtime: RuntimeDep) -> JSONResponse:
    """The registry's own DID document (`did:web:<host>`)."""
    await signing_keys.active_key(
        runtime.database,
        runtime.keystore,
        runtime.clock,
        algorithm=runtime.settings.signing_algorithm,
    )
    async with runtime.database.read_only() as session:
        document = await documents.registry_did_document(
            session, runtime.settings, runtime.clock.now()
        )
    DID_DOCUMENTS_SERVED.inc()
    return JSONResponse(document, media_type=DID_CONTENT_TYPE)


@public_router.get("/v1/identifiers/{did}")
async def resolve_did(did: str, runtime: RuntimeDep, ctx: ContextDep) -> dict[str, Any]:
    """DID resolution (W3C DID Resolution result) for our did:web DIDs and any did:key."""
    await signing_keys.active_key(
        runtime.database,
        runtime.keystore,
        runtime.clock,
        algorithm=runtime.settings.signing_algorithm,
    )
    async with runtime.database.read_only() as session:
        result = await documents.resolve(session, ctx.actor, runtime.settings, did, ctx.clock.now())
    DID_DOCUMENTS_SERVED.inc()
    return result


@public_router.get("/agents/{agent_id}/agent-card.json")
async def agent_card(agent_id: str, runtime: RuntimeDep, ctx: ContextDep) -> dict[str, Any]:
    """The agent's A2A card, signed by the registry (verify with /.well-known/jwks.json)."""
    material = await signing_keys.active_key(
        runtime.database,
        runtime.keystore,
        runtime.clock,
        algorithm=runtime.settings.signing_algorithm,
    )
    async with runtime.database.read_only() as session:
        return await documents.signed_card(session, ctx.actor, runtime.settings, agent_id, material)
