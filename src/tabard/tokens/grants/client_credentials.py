"""The client credentials grant (RFC 6749 §4.4): an agent asks for a token for itself."""

from __future__ import annotations

from tabard.tokens.access_tokens import Grant
from tabard.tokens.caller import Caller, TokenRequest
from tabard.tokens.grants import OPENID_SCOPES, audiences, granted_scope

GRANT_TYPE = "client_credentials"


def client_credentials_grant(
    caller: Caller, request: TokenRequest, issuer: str, confirmation: dict[str, str] | None
) -> Grant:
    """A grant for the calling agent: scope within its capabilities (plus OpenID scopes)."""
    allowed = (*caller.agent.capabilities, *OPENID_SCOPES)
    requested = request.params.get("scope")
    scope = granted_scope(requested, allowed if requested else caller.agent.capabilities)
    return Grant(
        agent_id=caller.agent.id,
        org_id=caller.agent.org_id,
        agent_did=caller.agent.did,
        client_id=caller.client.client_id,
        scope=scope,
        audience=audiences(request.resources, request.audiences, issuer),
        lifetime_seconds=caller.policy.access_token_lifetime_seconds,
        confirmation=confirmation,
    )
