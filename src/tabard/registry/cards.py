"""A2A Agent Cards (Agent2Agent protocol 1.0, JSON form), signed by the registry.

The signature follows the A2A spec: a JWS (RFC 7515) with detached payload over the RFC 8785
canonical form of the card without `signatures` and without empty values, signed with the
registry's active key and verifiable with `/.well-known/jwks.json` (named by `jku` and `kid`).
"""

from __future__ import annotations

from typing import Any

import rfc8785

from tabard.registry.models import Agent
from tabard.signing.service import SigningMaterial, sign_detached

A2A_PROTOCOL_VERSION = "1.0"
SECURITY_SCHEME = "tabard"
_MODES = ["application/json", "text/plain"]


def card_url(public_url: str, agent_id: str) -> str:
    return f"{public_url}/agents/{agent_id}/agent-card.json"


def missing_for_card(agent: Agent) -> list[str]:
    """What the agent lacks for a valid A2A card (the spec requires an interface and a skill)."""
    missing = []
    if not agent.endpoint_url:
        missing.append("endpoint_url")
    if not agent.capabilities:
        missing.append("capabilities")
    return missing


def build_card(agent: Agent, *, org_name: str, public_url: str) -> dict[str, Any]:
    """The unsigned card: identity, interface, skills from capabilities, Tabard OAuth security."""
    card: dict[str, Any] = {
        "name": agent.display_name,
        "description": agent.description or f"{agent.display_name}, a {agent.type} agent",
        "supportedInterfaces": _interfaces(agent),
        "provider": {"organization": org_name, "url": public_url},
        "version": agent.version,
        "capabilities": {},
        "securitySchemes": {SECURITY_SCHEME: _oauth2_scheme(agent, public_url)},
        "securityRequirements": [{"schemes": {SECURITY_SCHEME: {"list": agent.capabilities}}}],
        "defaultInputModes": _MODES,
        "defaultOutputModes": _MODES,
        "skills": [_skill(capability) for capability in agent.capabilities],
    }
    return card


def sign_card(card: dict[str, Any], material: SigningMaterial, jwks_url: str) -> dict[str, Any]:
    """The card with one registry signature added to `signatures`."""
    payload = signing_input(card)
    protected, signature = sign_detached(material, payload, typ="JOSE", jku=jwks_url)
    return {**card, "signatures": [{"protected": protected, "signature": signature}]}


def signing_input(card: dict[str, Any]) -> bytes:
    """What the signature covers: canonical JSON of the card minus signatures and empty values."""
    unsigned = {name: value for name, value in card.items() if name != "signatures"}
    return rfc8785.dumps(_without_empty(unsigned) or {})


def _interfaces(agent: Agent) -> list[dict[str, str]]:
    if not agent.endpoint_url:
        return []
    return [
        {
            "url": agent.endpoint_url,
            "protocolBinding": "JSONRPC",
            "protocolVersion": A2A_PROTOCOL_VERSION,
        }
    ]


def _oauth2_scheme(agent: Agent, public_url: str) -> dict[str, Any]:
    return {
        "oauth2SecurityScheme": {
            "description": "OAuth 2.0 access tokens issued by the Tabard registry",
            "flows": {
                "clientCredentials": {
                    "tokenUrl": f"{public_url}/oauth2/token",
                    "scopes": {
                        capability: f"Use {capability}" for capability in agent.capabilities
                    },
                }
            },
            "oauth2MetadataUrl": f"{public_url}/.well-known/oauth-authorization-server",
        }
    }


def _skill(capability: str) -> dict[str, Any]:
    family = capability.replace(":", ".").split(".")[0]
    return {
        "id": capability,
        "name": capability,
        "description": f"Provides the {capability} capability",
        "tags": [family],
    }


def _without_empty(value: Any) -> Any:
    """Drop empty strings, lists and objects recursively, as A2A canonicalization does."""
    if isinstance(value, dict):
        cleaned = {k: v for k, item in value.items() if (v := _without_empty(item)) is not None}
        return cleaned or None
    if isinstance(value, list):
        items = [v for item in value if (v := _without_empty(item)) is not None]
        return items or None
    if value == "":
        return None
    return value
