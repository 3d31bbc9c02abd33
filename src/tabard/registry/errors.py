"""Registry errors."""

from __future__ import annotations

from tabard.core.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidField,
    NotFound,
    TabardError,
)


class AgentNotFound(NotFound):
    code = "AGENT_NOT_FOUND"
    title = "Agent not found"


class AgentAlreadyExists(Conflict):
    code = "AGENT_ALREADY_EXISTS"
    title = "An agent with this name already exists in the organization"


class DidConflict(Conflict):
    code = "DID_CONFLICT"
    title = "The DID is already taken"


class AgentStateConflict(Conflict):
    code = "AGENT_STATE_CONFLICT"
    title = "The agent is not in a state that allows this"


class OrgHasActiveAgents(Conflict):
    code = "ORG_HAS_ACTIVE_AGENTS"
    title = "The organization still has agents"


class TierAgentLimitExceeded(Forbidden):
    code = "TIER_AGENT_LIMIT_EXCEEDED"
    title = "The organization's tier allows no more agents"


class AgentDecommissioned(TabardError):
    status = 410
    code = "AGENT_DECOMMISSIONED"
    title = "The agent has been decommissioned"


class AgentCardUnavailable(NotFound):
    code = "AGENT_CARD_UNAVAILABLE"
    title = "The agent has no A2A card yet"


class DidNotFound(NotFound):
    code = "DID_NOT_FOUND"
    title = "DID not found"


class InvalidDid(BadRequest):
    code = "INVALID_DID"
    title = "Not a DID this registry can resolve"


class InvalidKey(InvalidField):
    code = "INVALID_KEY"
    title = "The key is not an acceptable public key"


class KeyNotFound(NotFound):
    code = "KEY_NOT_FOUND"
    title = "Key not found"


class KeyAlreadyRegistered(Conflict):
    code = "KEY_ALREADY_REGISTERED"
    title = "This public key is already registered"
