"""Token introspection (RFC 7662) and revocation of a presented token (RFC 7009).

Both answer only to an authenticated caller: a client (any token-endpoint authentication
method), an org API key, or the platform admin. A caller learns about tokens of its own org
only (a client also about tokens addressed to it); anything else is `{"active": false}`, exactly
like a malformed, expired or revoked token, so introspection reveals nothing across tenants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tabard.core.context import Context
from tabard.sdk.jwt import TokenInvalid
from tabard.tokens.access_tokens import audience_of
from tabard.tokens.errors import UnauthorizedClient
from tabard.tokens.revocation import RevocationKind, revoke
from tabard.tokens.service import TokenService

INACTIVE: dict[str, Any] = {"active": False}


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks: the platform admin (no org), an org key, or a client (with its agent)."""

    org_id: str | None
    client_id: str | None = None
    agent_id: str | None = None
    agent_did: str | None = None

    @property
    def is_platform_admin(self) -> bool:
        return self.org_id is None


async def introspect(service: TokenService, requester: Requester, token: str) -> dict[str, Any]:
    """RFC 7662 §2.2: the claims of an active token the requester may know about."""
    try:
        verified = await service.verifier.verify(token)
    except (TokenInvalid, ValueError):
        return INACTIVE
    claims = verified.claims
    if not _may_know(requester, claims):
        return INACTIVE
    confirmation = claims.get("cnf")
    bound = isinstance(confirmation, dict) and "jkt" in confirmation
    return {"active": True, **claims, "token_type": "DPoP" if bound else "Bearer"}


async def revoke_presented(
    service: TokenService, requester: Requester, token: str, ctx: Context
) -> None:
    """RFC 7009 §2: revoke one token (and so every token derived from it). Invalid, expired or
    already revoked tokens need nothing (§2.2: still a success); another client's is refused."""
    try:
        verified = await service.verifier.verify(token)
    except (TokenInvalid, ValueError):
        return
    claims = verified.claims
    if not _may_revoke(requester, claims):
        raise UnauthorizedClient("this token was not issued to the requesting client")
    expires_at = datetime.fromtimestamp(float(claims["exp"]), tz=UTC)
    async with service.runtime.database.unit_of_work() as session:
        await revoke(
            session,
            ctx,
            RevocationKind.JTI,
            str(claims["jti"]),
            org_id=str(claims.get("org")),
            expires_at=expires_at,
            reason="revoked_by_holder" if requester.client_id else "revoked_by_org",
        )


def _may_know(requester: Requester, claims: dict[str, Any]) -> bool:
    if requester.is_platform_admin or claims.get("org") == requester.org_id:
        return True
    own = {requester.agent_id, requester.agent_did, requester.client_id} - {None}
    return bool(audience_of(claims) & own)


def _may_revoke(requester: Requester, claims: dict[str, Any]) -> bool:
    if requester.is_platform_admin:
        return True
    if requester.client_id is None:
        return claims.get("org") == requester.org_id
    return requester.client_id == claims.get("client_id") or requester.agent_id == claims.get("sub")
