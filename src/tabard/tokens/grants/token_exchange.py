"""Token exchange for delegation chains (RFC 8693).

Agent B (the authenticated client) presents agent A's access token as `subject_token` and its own
as `actor_token`. The new token speaks for A (`sub`) and names B as the current actor
(`act: {sub: B, act: <earlier actors>}`, §4.1). Its scope is within both tokens' scopes, it
dies no later than A's token, and the chain may not grow past the configured depth. Every token
of a chain carries the chain id and the jtis it was derived from, so revoking any link (a token,
an actor agent, the chain) revokes everything derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tabard.core.ids import new_id
from tabard.sdk.jwt import TokenInvalid
from tabard.tokens.access_tokens import (
    TOKEN_TYPE_ACCESS_TOKEN,
    TOKEN_TYPE_JWT,
    Grant,
    audience_of,
)
from tabard.tokens.caller import Caller, TokenRequest
from tabard.tokens.errors import InvalidGrant, InvalidRequest, InvalidScope, UnauthorizedClient
from tabard.tokens.grants import audiences, granted_scope
from tabard.tokens.revocation import actor_ids
from tabard.tokens.verification import AccessTokenVerifier, VerifiedToken

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
_ACCEPTED_TOKEN_TYPES = (TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT)


@dataclass(frozen=True, slots=True)
class Delegation:
    grant: Grant
    new_chain: bool
    subject: VerifiedToken


async def token_exchange_grant(
    caller: Caller,
    request: TokenRequest,
    verifier: AccessTokenVerifier,
    *,
    issuer: str,
    max_depth: int,
    now: float,
    confirmation: dict[str, str] | None,
) -> Delegation:
    subject = await _presented_token(request, "subject_token", verifier)
    actor = await _presented_token(request, "actor_token", verifier)
    _check_actor(caller, actor.claims)
    _check_subject_addressed_to_actor(caller, subject.claims, issuer)
    _check_binding_allows_exchange(caller, subject.claims)
    if subject.claims.get("org") != caller.client.org_id:
        raise UnauthorizedClient(
            "an agent may act only for agents of its own organization",
            reason="cross_org_delegation",
        )
    earlier_actors = subject.claims.get("act")
    if len(actor_ids(subject.claims)) + 1 > max_depth:
        raise InvalidGrant(f"the delegation chain would exceed the maximum depth of {max_depth}")
    remaining = int(float(subject.claims["exp"]) - now)
    if remaining <= 0:
        raise InvalidGrant("the subject token has expired")
    chain_id = subject.claims.get("chain_id")
    new_chain = not isinstance(chain_id, str)
    act: dict[str, Any] = {"sub": caller.agent.id}
    if isinstance(earlier_actors, dict):
        act["act"] = earlier_actors
    grant = Grant(
        agent_id=str(subject.claims["sub"]),
        org_id=str(subject.claims["org"]),
        agent_did=str(subject.claims.get("agent_did", "")),
        client_id=caller.client.client_id,
        scope=_delegated_scope(request.params.get("scope"), subject.claims, actor.claims),
        audience=audiences(request.resources, request.audiences, issuer),
        lifetime_seconds=min(caller.policy.access_token_lifetime_seconds, remaining),
        confirmation=confirmation,
        actor=act,
        chain_id=new_id() if new_chain else str(chain_id),
        derived_from=_lineage(subject.claims, actor.claims),
        derived_clients=_clients(subject.claims, actor.claims),
        derived_certificates=_certificates(subject.claims, actor.claims),
        certificate=caller.client.certificate.certificate_key
        if caller.client.certificate
        else None,
    )
    return Delegation(grant, new_chain, subject)


async def _presented_token(
    request: TokenRequest, name: str, verifier: AccessTokenVerifier
) -> VerifiedToken:
    token = request.params.get(name)
    token_type = request.params.get(f"{name}_type")
    if not token or not token_type:
        raise InvalidRequest(f"{name} and {name}_type are required for delegation")
    if token_type not in _ACCEPTED_TOKEN_TYPES:
        raise InvalidRequest(f"{name}_type must be {TOKEN_TYPE_ACCESS_TOKEN}")
    try:
        return await verifier.verify(token)
    except TokenInvalid as exc:
        raise InvalidGrant(f"{name} is not valid: {exc}", reason=f"{name}_{exc.reason}") from None


def _check_actor(caller: Caller, claims: dict[str, Any]) -> None:
    if claims.get("sub") != caller.agent.id:
        raise InvalidGrant("actor_token must be the authenticated client's own token")


def _check_subject_addressed_to_actor(caller: Caller, claims: dict[str, Any], issuer: str) -> None:
    """A's token may be exchanged by B only if it was issued for Tabard or for B itself."""
    if not audience_of(claims) & {issuer, *_actor_names(caller)}:
        raise InvalidGrant("subject_token was not issued for this actor or for Tabard")


def _check_binding_allows_exchange(caller: Caller, claims: dict[str, Any]) -> None:
    """A sender-constrained subject token cannot be proven by the actor (it lacks A's key or
    certificate), so A must have addressed it to the actor by name, not just to Tabard."""
    if not claims.get("cnf"):
        return
    if not audience_of(claims) & _actor_names(caller):
        raise InvalidGrant(
            "a DPoP- or certificate-bound subject_token must be addressed to the actor (aud)"
        )


def _actor_names(caller: Caller) -> set[str]:
    """What a token addressed to the actor names in its `aud`: its agent id, DID or client id."""
    return {caller.agent.id, caller.agent.did, caller.client.client_id}


def _delegated_scope(
    requested: str | None, subject: dict[str, Any], actor: dict[str, Any]
) -> tuple[str, ...]:
    common = set(str(subject.get("scope", "")).split()) & set(str(actor.get("scope", "")).split())
    common.discard("openid")
    if not common:
        raise InvalidScope("the subject and actor tokens share no scope to delegate")
    return granted_scope(requested, common)


def _clients(subject: dict[str, Any], actor: dict[str, Any]) -> tuple[str, ...]:
    """The client ids behind every link, so revoking any of those credentials reaches here."""
    clients: list[str] = []
    for claims in (subject, actor):
        earlier = claims.get("derived_clients")
        if isinstance(earlier, list):
            clients.extend(str(client) for client in earlier)
        clients.append(str(claims.get("client_id", "")))
    return tuple(dict.fromkeys(clients))


def _certificates(subject: dict[str, Any], actor: dict[str, Any]) -> tuple[str, ...]:
    """The agent certificates behind every link, so revoking one reaches here too."""
    keys: list[str] = []
    for claims in (subject, actor):
        earlier = claims.get("derived_certs")
        if isinstance(earlier, list):
            keys.extend(str(key) for key in earlier)
        if isinstance(claims.get("cert"), str):
            keys.append(claims["cert"])
    return tuple(dict.fromkeys(keys))


def _lineage(subject: dict[str, Any], actor: dict[str, Any]) -> tuple[str, ...]:
    """Every jti the new token derives from: both tokens and their own ancestors."""
    jtis: list[str] = []
    for claims in (subject, actor):
        ancestors = claims.get("derived_from")
        if isinstance(ancestors, list):
            jtis.extend(str(jti) for jti in ancestors)
        jtis.append(str(claims["jti"]))
    return tuple(dict.fromkeys(jtis))
