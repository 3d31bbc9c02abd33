"""The client credentials grant (RFC 6749 §4.4): an agent asks for a token for itself.

The scope is the intersection of what was requested (everything, when nothing was), what the
credential may ask for, and what the agent's binding approves (RFC 6749 §3.3 lets the server
narrow it; the response says what was granted). Asking for a scope the agent does not have at
all is `invalid_scope`, and so is an intersection that leaves nothing.
"""

from __future__ import annotations

from tabard.tokens.access_tokens import Grant
from tabard.tokens.caller import Caller, TokenRequest
from tabard.tokens.errors import InvalidScope
from tabard.tokens.grants import OPENID_SCOPES, audiences, granted_scope

GRANT_TYPE = "client_credentials"


def client_credentials_grant(
    caller: Caller,
    request: TokenRequest,
    issuer: str,
    confirmation: dict[str, str] | None,
    now: float,
) -> Grant:
    """A grant for the calling agent: scope within its capabilities (plus OpenID scopes)."""
    allowed = (*caller.agent.capabilities, *OPENID_SCOPES)
    requested = request.params.get("scope")
    wanted = granted_scope(requested, allowed if requested else caller.agent.capabilities)
    scope = _narrowed(wanted, caller.client.scope, caller.binding_scope)
    certificate = caller.client.certificate
    return Grant(
        agent_id=caller.agent.id,
        org_id=caller.agent.org_id,
        agent_did=caller.agent.did,
        client_id=caller.client.client_id,
        scope=scope,
        audience=audiences(request.resources, request.audiences, issuer),
        lifetime_seconds=_lifetime(caller, now),
        confirmation=confirmation,
        certificate=certificate.certificate_key if certificate is not None else None,
    )


def _lifetime(caller: Caller, now: float) -> int:
    """The org's token lifetime, never past the credential's or certificate's own expiry."""
    lifetime = caller.policy.access_token_lifetime_seconds
    expires_at = caller.client.expires_at
    if expires_at is not None:
        lifetime = min(lifetime, max(1, int(expires_at - now)))
    return lifetime


def _narrowed(wanted: tuple[str, ...], *limits: tuple[str, ...] | None) -> tuple[str, ...]:
    """`wanted` within every limit that applies (OpenID scopes are never limited)."""
    scope = [
        item
        for item in wanted
        if item in OPENID_SCOPES or all(limit is None or item in limit for limit in limits)
    ]
    if _capabilities(wanted) and not _capabilities(scope):
        raise InvalidScope(
            "nothing of the requested scope is allowed by the credential and the agent's binding"
        )
    return tuple(scope)


def _capabilities(scope: tuple[str, ...] | list[str]) -> list[str]:
    return [item for item in scope if item not in OPENID_SCOPES]
