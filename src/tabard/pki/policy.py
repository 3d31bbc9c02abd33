"""Who may do what with CAs and certificates. One function per action; each raises or returns."""

from __future__ import annotations

from tabard.core.context import Actor, ActorKind
from tabard.pki.errors import CertificateNotFound
from tabard.tenancy import policy as tenancy_policy
from tabard.tenancy.errors import NotPermitted


def require_pki_management(actor: Actor, org_id: str) -> None:
    """CAs, revocations, pins, settings: the platform admin or the org; others see 404."""
    tenancy_policy.require_org_access(actor, org_id)


def require_certificate_request(actor: Actor, org_id: str, agent_id: str, *, pin: bool) -> None:
    """The org (or the admin) for any of its agents; an agent for itself, without pinning
    (rotating the login certificate is the org's decision)."""
    if actor.kind is ActorKind.AGENT and actor.org_id == org_id:
        if actor.id != agent_id:
            raise CertificateNotFound(f"no agent {agent_id!r} for this caller")
        if pin:
            raise NotPermitted("only the organization may pin an agent's login certificate")
        return
    tenancy_policy.require_org_access(actor, org_id)
