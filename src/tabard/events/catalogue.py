"""Every event type Tabard emits, what it means, and the members its `data` always has.

The envelope is the same for all: `{id, type, org, time, subject, data}`. docs/events.md is
this table for operators; a test checks that every event the suite produces is listed here and
that its data has these members with these JSON types.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, SQLColumnExpression, or_, true

_S, _I, _B, _L, _O = "string", "integer", "boolean", "array", "object"
_AGENT = {"agent_id": _S, "agent_name": _S}
_CREDENTIAL = {"agent_id": _S, "client_id": _S}
_BINDING = {"binding_id": _S, "agent_id": _S, "status": _S, "scope": _L}
_INVITE = {"invite_id": _S, "kind": _S, "label": _S}
_REGISTRATION = {"registration_token_id": _S, "label": _S}
_COMMAND = {
    "command_id": _S,
    "agent_id": _S,
    "type": _S,
    "action": _S,
    "state": _S,
    "attempts": _I,
}
_CERTIFICATE = {"agent_id": _S, "certificate_id": _S, "serial": _S}

# type → (what happened, data members and their JSON types)
EVENT_TYPES: dict[str, tuple[str, dict[str, str]]] = {
    "org.created": (
        "an organization was created (active, or pending when it applied)",
        {"tier": _S, "status": _S},
    ),
    "org.updated": ("an organization's display name or tier changed", {}),
    "org.approved": ("a pending organization was approved", {"status": _S}),
    "org.rejected": ("a pending organization was rejected", {"status": _S}),
    "org.suspended": ("an organization was suspended; its tokens died", {"status": _S}),
    "org.reactivated": ("a suspended organization is active again", {"status": _S}),
    "org.deleted": ("an organization was deleted", {}),
    "org.api_key.created": ("an org API key was created", {"key_id": _S}),
    "org.api_key.revoked": ("an org API key was revoked", {"key_id": _S}),
    "org.token_settings.updated": ("an org's token policy changed", {"require_dpop": _B}),
    "org.trust_settings.updated": (
        "an org's binding requirement changed",
        {"binding_required": _B},
    ),
    "org.pki_settings.updated": (
        "an org's certificate lifetime changed",
        {"certificate_lifetime_seconds": _I},
    ),
    "agent.created": ("an agent was registered", {**_AGENT, "did": _S, "environment": _S}),
    "agent.updated": ("an agent's fields changed", {**_AGENT, "fields": _L}),
    "agent.suspended": ("an agent was suspended; its tokens died", {**_AGENT, "status": _S}),
    "agent.reactivated": ("a suspended agent is active again", {**_AGENT, "status": _S}),
    "agent.decommissioned": ("an agent was retired for good", {**_AGENT, "status": _S}),
    "agent.key.added": ("a public key was registered for an agent", {**_AGENT, "kid": _S}),
    "agent.key.revoked": ("an agent's key was revoked", {**_AGENT, "kid": _S}),
    "agent.actions.declared": (
        "an agent declared the actions it can run",
        {"agent_id": _S, "actions": _L},
    ),
    "agent.online": ("an agent's first instance came online", {"agent_id": _S, "last_seen_at": _S}),
    "agent.offline": (
        "no instance of an agent beat within the threshold",
        {"agent_id": _S, "last_seen_at": _S},
    ),
    "credential.created": ("a client credential was created", {**_CREDENTIAL, "auth_method": _S}),
    "credential.updated": (
        "a credential was renamed or got new keys or scope",
        {**_CREDENTIAL, "fields": _L},
    ),
    "credential.rotated": (
        "a client secret was rotated",
        {**_CREDENTIAL, "grace_period_seconds": _I},
    ),
    "credential.revoked": (
        "a credential was revoked; its tokens died",
        {**_CREDENTIAL, "reason": _S},
    ),
    "token.revoked": (
        "tokens were revoked (one, a chain, or everything of a subject)",
        {"kind": _S, "value": _S, "reason": _S},
    ),
    "signing_key.rotated": ("the signing key was rotated", {}),
    "signing_key.revoked": ("a signing key was revoked in an emergency", {}),
    "ca.created": ("an org CA was generated or uploaded", {"ca_id": _S, "source": _S}),
    "ca.replaced": (
        "an org CA was replaced; its certificates and their tokens ended",
        {"ca_id": _S, "replaced_by": _S},
    ),
    "certificate.issued": ("Tabard signed an agent's CSR", {**_CERTIFICATE, "ca_id": _S}),
    "certificate.registered": (
        "a certificate the org issued was registered",
        {**_CERTIFICATE, "ca_id": _S},
    ),
    "certificate.self_signed": ("a self-signed agent certificate was registered", _CERTIFICATE),
    "certificate.pinned": ("an agent's login certificate was pinned", {"agent_id": _S}),
    "certificate.pin.cleared": ("an agent's pin was cleared", {"agent_id": _S}),
    "certificate.revoked": (
        "a certificate was revoked; tokens issued from it died",
        {"serial": _S, "reason": _S},
    ),
    "certificate.expiring": (
        "a certificate entered its last 7 days",
        {**_CERTIFICATE, "not_after": _S},
    ),
    "binding.created": ("a binding was requested", _BINDING),
    "binding.updated": ("a binding's scope or note changed", _BINDING),
    "binding.approved": ("a binding was approved", _BINDING),
    "binding.revoked": ("a binding was revoked; the agent's tokens died", _BINDING),
    "invite.created": ("the platform admin issued an invite", _INVITE),
    "invite.used": ("an invite was used (join or attach)", _INVITE),
    "invite.revoked": ("an invite was revoked", _INVITE),
    "registration_token.created": ("a registration token was created", _REGISTRATION),
    "registration_token.used": (
        "an agent process registered with a token",
        {**_REGISTRATION, "agent_id": _S},
    ),
    "registration_token.revoked": ("a registration token was revoked", _REGISTRATION),
    "command.created": ("an operator asked an agent to run an action", _COMMAND),
    "command.running": ("an instance started a command", _COMMAND),
    "command.succeeded": ("a command succeeded", _COMMAND),
    "command.failed": ("a command failed (its error code in error_code)", _COMMAND),
    "command.expired": ("a command expired before it ran", _COMMAND),
    "command.cancelled": ("a pending command was cancelled", _COMMAND),
    "command.requeued": ("a command's instance stopped answering; offered again", _COMMAND),
    "webhook.test": ("a test event an operator sent to a subscription", {"subscription_id": _S}),
    "webhook.paused": (
        "a subscription failing continuously was paused",
        {"subscription_id": _S, "consecutive_failures": _I},
    ),
}


def data_schema(event_type: str) -> dict[str, Any]:
    """The JSON Schema its `data` always satisfies (more members may come)."""
    members = EVENT_TYPES[event_type][1]
    return {
        "type": "object",
        "required": sorted(members),
        "properties": {name: {"type": kind} for name, kind in members.items()},
    }


def matches(patterns: list[str], event_type: str) -> bool:
    """`*` matches everything, `agent.*` every type under `agent.`, else exact types."""
    for pattern in patterns:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def known_pattern(pattern: str) -> bool:
    """A pattern that matches at least one catalogued type."""
    return any(matches([pattern], event_type) for event_type in EVENT_TYPES)


def type_filter(patterns: list[str], column: SQLColumnExpression[str]) -> ColumnElement[bool]:
    """`matches` as SQL over an event type column (true for no patterns)."""
    if not patterns or "*" in patterns:
        return true()
    exact = [pattern for pattern in patterns if not pattern.endswith(".*")]
    families = [pattern[:-1] for pattern in patterns if pattern.endswith(".*")]
    clauses: list[ColumnElement[bool]] = [column.in_(exact)] if exact else []
    clauses += [column.startswith(prefix, autoescape=True) for prefix in families]
    return or_(*clauses)
