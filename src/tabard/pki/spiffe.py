"""SPIFFE IDs of agents (SPIFFE ID spec §2): `spiffe://<trust domain>/org/<org>/agent/<name>`.

Org ids and agent names are slugs, so they are valid path segments as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEME = "spiffe://"
_AGENT_PATH = re.compile(
    r"/org/(?P<org>[a-z0-9][a-z0-9-]{0,62})/agent/(?P<name>[a-z0-9][a-z0-9-]{0,62})"
)


@dataclass(frozen=True, slots=True)
class AgentSpiffeId:
    trust_domain: str
    org_id: str
    agent_name: str

    def __str__(self) -> str:
        return agent_spiffe_id(self.trust_domain, self.org_id, self.agent_name)


def agent_spiffe_id(trust_domain: str, org_id: str, agent_name: str) -> str:
    return f"{SCHEME}{trust_domain}/org/{org_id}/agent/{agent_name}"


def parse_agent_spiffe_id(value: str) -> AgentSpiffeId | None:
    """The parts of an agent's SPIFFE ID, or None when `value` is not one."""
    if not value.startswith(SCHEME):
        return None
    trust_domain, slash, path = value.removeprefix(SCHEME).partition("/")
    match = _AGENT_PATH.fullmatch(slash + path)
    if not trust_domain or match is None:
        return None
    return AgentSpiffeId(trust_domain, match["org"], match["name"])
