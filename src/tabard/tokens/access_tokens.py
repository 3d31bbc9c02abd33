"""JWT access tokens (RFC 9068) and OpenID Connect ID tokens (OIDC Core §2), signed compactly.

Encoding is done here rather than through a JOSE library: the header of a key never changes, the
claims are plain JSON, and the signature comes from the signing key's own `sign`, so issuing a
token costs one signature and two small JSON dumps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from tabard.core.ids import new_id
from tabard.core.jose import b64url_encode
from tabard.signing.service import SigningMaterial

# JWT `typ` values and RFC 8693 token type URIs: names, not secrets.
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105
ID_TOKEN_TYPE = "JWT"  # noqa: S105
TOKEN_TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@lru_cache(maxsize=64)
def _encoded_header(alg: str, kid: str, typ: str) -> str:
    return b64url_encode(_json({"alg": alg, "kid": kid, "typ": typ}))


def encode_jwt(material: SigningMaterial, claims: dict[str, Any], typ: str) -> str:
    """A compact JWS over `claims` with the header {alg, kid, typ}."""
    signing_input = (
        f"{_encoded_header(material.alg, material.kid, typ)}.{b64url_encode(_json(claims))}"
    )
    signature = material.sign(signing_input.encode())
    return f"{signing_input}.{b64url_encode(signature)}"


@dataclass(frozen=True, slots=True)
class Grant:
    """What a token will say: who, for whom, what for, how long, bound to what."""

    agent_id: str
    org_id: str
    agent_did: str
    client_id: str
    scope: tuple[str, ...]
    audience: tuple[str, ...]
    lifetime_seconds: int
    confirmation: dict[str, str] | None = None
    actor: dict[str, Any] | None = None
    chain_id: str | None = None
    derived_from: tuple[str, ...] = field(default=())
    derived_clients: tuple[str, ...] = field(default=())
    # The agent certificate it was issued from (`<ca id>/<serial>`), and those of a chain's links.
    certificate: str | None = None
    derived_certificates: tuple[str, ...] = field(default=())


def access_token_claims(issuer: str, grant: Grant, now: int) -> dict[str, Any]:
    """RFC 9068 §2.2 claims plus Tabard's `org`, `agent_did`, delegation facts, and `cert`:
    the agent certificate a certificate login presented (its revocation ends the token)."""
    audience: str | Sequence[str] = (
        grant.audience[0] if len(grant.audience) == 1 else list(grant.audience)
    )
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": grant.agent_id,
        "aud": audience,
        "client_id": grant.client_id,
        "scope": " ".join(grant.scope),
        "jti": new_id(),
        "iat": now,
        "exp": now + grant.lifetime_seconds,
        "org": grant.org_id,
        "agent_did": grant.agent_did,
    }
    if grant.confirmation:
        claims["cnf"] = grant.confirmation
    if grant.actor:
        claims["act"] = grant.actor
    if grant.chain_id:
        claims["chain_id"] = grant.chain_id
        claims["derived_from"] = list(grant.derived_from)
        claims["derived_clients"] = list(grant.derived_clients)
    if grant.certificate:
        claims["cert"] = grant.certificate
    if grant.derived_certificates:
        claims["derived_certs"] = list(grant.derived_certificates)
    return claims


def audience_of(claims: Mapping[str, Any]) -> set[str]:
    """The `aud` of a JWT as a set: a single string and a list of them mean the same."""
    audience = claims.get("aud")
    values = audience if isinstance(audience, list) else [audience]
    return {value for value in values if isinstance(value, str)}


def id_token_claims(
    issuer: str, grant: Grant, profile: dict[str, Any], now: int, lifetime_seconds: int
) -> dict[str, Any]:
    """OIDC Core §2 ID token for an agent: the client is the audience, the agent the subject."""
    return {
        "iss": issuer,
        "sub": grant.agent_id,
        "aud": grant.client_id,
        "azp": grant.client_id,
        "iat": now,
        "auth_time": now,
        "exp": now + lifetime_seconds,
        **profile,
    }
