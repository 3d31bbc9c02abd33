"""The public faces of agents: DID documents, DID resolution, signed A2A agent cards.

Visibility is applied here: private agents' documents exist only for their org and the platform
admin (404 for anyone else); a decommissioned agent's documents answer 410 Gone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.config import Settings
from tabard.core.context import Actor
from tabard.registry import cards, did, keys, policy, service
from tabard.registry.did_key import InvalidDidKey, did_key_document
from tabard.registry.errors import (
    AgentCardUnavailable,
    AgentDecommissioned,
    AgentNotFound,
    DidNotFound,
    InvalidDid,
)
from tabard.registry.models import Agent
from tabard.registry.schemas import AgentStatus
from tabard.signing import service as signing_keys
from tabard.signing.service import SigningMaterial
from tabard.tenancy import service as tenancy


async def agent_did_document(
    session: AsyncSession, actor: Actor, settings: Settings, agent_id: str
) -> dict[str, Any]:
    agent = await _live_visible_agent(session, actor, agent_id)
    return await _document(session, settings, agent)


async def registry_did_document(
    session: AsyncSession, settings: Settings, now: datetime
) -> dict[str, Any]:
    """The registry's own DID document: the signing keys published at `now`."""
    jwks = await signing_keys.jwks(session, now=now)
    return did.registry_document(did.web_did(settings.public_url), jwks, settings.public_url)


async def resolve(
    session: AsyncSession, actor: Actor, settings: Settings, identifier: str, now: datetime
) -> dict[str, Any]:
    """A DID resolution result for one of our did:web DIDs or any did:key."""
    if identifier.startswith("did:key:"):
        return await _resolve_did_key(session, actor, identifier)
    if identifier == did.web_did(settings.public_url):
        document = await registry_did_document(session, settings, now)
        return did.resolution_result(document, metadata={})
    agent_id = did.agent_id_from_did(settings.public_url, identifier)
    if agent_id is None:
        raise InvalidDid(f"{identifier!r} is neither a DID of this registry nor a did:key")
    try:
        agent = await _live_visible_agent(session, actor, agent_id)
    except AgentNotFound:
        raise DidNotFound(f"no DID for agent {agent_id!r}") from None
    document = await _document(session, settings, agent)
    return did.resolution_result(document, metadata=_metadata(agent))


async def signed_card(
    session: AsyncSession,
    actor: Actor,
    settings: Settings,
    agent_id: str,
    material: SigningMaterial,
) -> dict[str, Any]:
    """The agent's A2A card, signed with the registry's active key."""
    agent = await _live_visible_agent(session, actor, agent_id)
    missing = cards.missing_for_card(agent)
    if missing:
        raise AgentCardUnavailable(
            f"agent {agent_id!r} needs {' and '.join(missing)} to publish an A2A card",
            missing=missing,
        )
    org = await tenancy.get_org(session, agent.org_id)
    card = cards.build_card(agent, org_name=org.display_name, public_url=settings.public_url)
    return cards.sign_card(card, material, f"{settings.public_url}/.well-known/jwks.json")


async def _live_visible_agent(session: AsyncSession, actor: Actor, agent_id: str) -> Agent:
    agent = policy.require_visible(actor, await service.find_agent(session, agent_id), agent_id)
    if agent.status == AgentStatus.DECOMMISSIONED.value:
        raise AgentDecommissioned(
            f"agent {agent_id!r} was decommissioned; its DID is deactivated",
            didDocumentMetadata=_metadata(agent),
        )
    return agent


async def _document(session: AsyncSession, settings: Settings, agent: Agent) -> dict[str, Any]:
    agent_keys = await keys.active_keys(session, agent.id)
    return did.agent_document(
        agent.did,
        [{**key.public_jwk, "kid": key.kid} for key in agent_keys],
        also_known_as=[key.did_key for key in agent_keys],
        card_url=None
        if cards.missing_for_card(agent)
        else cards.card_url(settings.public_url, agent.id),
        endpoint_url=agent.endpoint_url,
    )


async def _resolve_did_key(session: AsyncSession, actor: Actor, identifier: str) -> dict[str, Any]:
    try:
        document = did_key_document(identifier)
    except InvalidDidKey as exc:
        raise InvalidDid(str(exc)) from None
    metadata: dict[str, Any] = {}
    key = await keys.find_by_did_key(session, document["id"])
    if key is not None and key.revoked_at is None:
        agent = await service.find_agent(session, key.agent_id)
        if agent is not None and policy.can_see(actor, agent):
            metadata["equivalentId"] = [agent.did]
    return did.resolution_result(document, metadata=metadata)


def _metadata(agent: Agent) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "created": agent.created_at.isoformat().replace("+00:00", "Z"),
        "updated": agent.updated_at.isoformat().replace("+00:00", "Z"),
    }
    if agent.status == AgentStatus.DECOMMISSIONED.value:
        metadata["deactivated"] = True
    return metadata
