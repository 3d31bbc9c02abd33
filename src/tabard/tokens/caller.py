"""A parsed token-endpoint request and the authenticated client behind it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from tabard.tokens.client_auth import AuthenticatedClient
from tabard.tokens.org_settings import TokenPolicy


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """RFC 6749 form parameters (single-valued), the multi-valued RFC 8707 `resource` and RFC
    8693 `audience`, and the request's proofs: client authentication, DPoP, client certificate."""

    params: dict[str, str]
    resources: list[str] = field(default_factory=list)
    audiences: list[str] = field(default_factory=list)
    authorization: str | None = None
    dpop_proofs: list[str] = field(default_factory=list)
    certificate_thumbprint: str | None = None
    client_certificates: tuple[x509.Certificate, ...] = ()
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class AgentFacts:
    """What tokens say about an agent, copied from the registry's record."""

    id: str
    org_id: str
    did: str
    name: str
    display_name: str
    description: str
    version: str
    capabilities: tuple[str, ...]
    endpoint_url: str | None

    @classmethod
    def of(cls, agent: Any) -> AgentFacts:
        return cls(
            id=agent.id,
            org_id=agent.org_id,
            did=agent.did,
            name=agent.name,
            display_name=agent.display_name,
            description=agent.description,
            version=agent.version,
            capabilities=tuple(agent.capabilities),
            endpoint_url=agent.endpoint_url,
        )

    def profile(self) -> dict[str, Any]:
        """OIDC standard claims (Core §5.1) plus the agent's registry facts."""
        profile: dict[str, Any] = {
            "name": self.display_name,
            "preferred_username": self.name,
            "org": self.org_id,
            "agent_did": self.did,
            "capabilities": list(self.capabilities),
            "version": self.version,
        }
        if self.description:
            profile["description"] = self.description
        if self.endpoint_url:
            profile["website"] = self.endpoint_url
        return profile


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated client, its agent (active), its org's token policy, and the scope its
    binding allows."""

    client: AuthenticatedClient
    agent: AgentFacts
    org_tier: str
    policy: TokenPolicy
    binding_scope: tuple[str, ...] | None = None  # an approved binding's scope (None: no limit)
