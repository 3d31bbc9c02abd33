"""Authorization server metadata (RFC 8414) and OpenID Provider metadata (OIDC Discovery 1.0 §3).

One document serves both: RFC 8414 §3 builds on the OIDC fields. There is no authorization
endpoint (agents use client credentials and token exchange, never a browser), so the response
types are `none` only.
"""

from __future__ import annotations

from typing import Any

from tabard.tokens.client_auth import ASSERTION_ALGORITHMS, SUPPORTED_METHODS
from tabard.tokens.grants import OPENID_SCOPES
from tabard.tokens.service import GRANT_TYPES

ID_TOKEN_ALGORITHMS = ("ES256", "Ed25519", "RS256")


def metadata(issuer: str, dpop_algorithms: list[str]) -> dict[str, Any]:
    """The metadata of the Tabard deployment whose issuer identifier is `issuer`."""
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/oauth2/token",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "introspection_endpoint": f"{issuer}/oauth2/introspect",
        "revocation_endpoint": f"{issuer}/oauth2/revoke",
        "userinfo_endpoint": f"{issuer}/oauth2/userinfo",
        "grant_types_supported": list(GRANT_TYPES),
        "response_types_supported": ["none"],
        "subject_types_supported": ["public"],
        "scopes_supported": list(OPENID_SCOPES),
        "token_endpoint_auth_methods_supported": list(SUPPORTED_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "introspection_endpoint_auth_methods_supported": [*SUPPORTED_METHODS, "bearer"],
        "revocation_endpoint_auth_methods_supported": [*SUPPORTED_METHODS, "bearer"],
        "id_token_signing_alg_values_supported": list(ID_TOKEN_ALGORITHMS),
        "userinfo_signing_alg_values_supported": [],
        "dpop_signing_alg_values_supported": dpop_algorithms,
        "tls_client_certificate_bound_access_tokens": True,
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "name",
            "preferred_username",
            "website",
            "org",
            "agent_did",
            "capabilities",
        ],
        "service_documentation": "https://github.com/tabard/tabard/blob/main/docs/tokens.md",
    }
