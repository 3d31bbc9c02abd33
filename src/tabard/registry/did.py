"""did:web identifiers and the DID documents the registry hosts (W3C DID Core 1.0, did:web).

The registry is `did:web:<host>` (document at `/.well-known/did.json`); an agent is
`did:web:<host>:agents:<id>` (document at `/agents/<id>/did.json`). A port in the host is
percent-encoded (`%3A`) and a path in the public URL becomes extra segments, as did:web says.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

DID_CONTEXT = "https://www.w3.org/ns/did/v1"
JWS_2020_CONTEXT = "https://w3id.org/security/suites/jws-2020/v1"
RESOLUTION_CONTEXT = "https://w3id.org/did-resolution/v1"
DID_CONTENT_TYPE = "application/did+ld+json"
AGENT_CARD_SERVICE = "A2AAgentCard"
AGENT_ENDPOINT_SERVICE = "AgentEndpoint"


def web_did(public_url: str, *segments: str) -> str:
    """The did:web identifier for `public_url` plus path `segments`."""
    parsed = urlparse(public_url)
    host = parsed.hostname or ""
    if parsed.port:
        host += f"%3A{parsed.port}"
    base_path = [part for part in parsed.path.split("/") if part]
    return ":".join(["did", "web", host, *base_path, *segments])


def agent_did(public_url: str, agent_id: str) -> str:
    return web_did(public_url, "agents", agent_id)


def agent_id_from_did(public_url: str, did: str) -> str | None:
    """The agent id inside one of our agent DIDs, or None when `did` is not one."""
    prefix = web_did(public_url, "agents", "")
    candidate = did.removeprefix(prefix)
    if candidate == did or not candidate or ":" in candidate:
        return None
    return candidate


def agent_document(
    did: str,
    keys: list[dict[str, Any]],
    *,
    also_known_as: list[str],
    card_url: str | None,
    endpoint_url: str | None,
) -> dict[str, Any]:
    """An agent's DID document: its public keys (`JsonWebKey2020`) and services."""
    methods = [
        {
            "id": f"{did}#{key['kid']}",
            "type": "JsonWebKey2020",
            "controller": did,
            "publicKeyJwk": {name: value for name, value in key.items() if name != "kid"},
        }
        for key in keys
    ]
    references = [method["id"] for method in methods]
    services: list[dict[str, Any]] = []
    if card_url:
        services.append(
            {"id": f"{did}#agent-card", "type": AGENT_CARD_SERVICE, "serviceEndpoint": card_url}
        )
    if endpoint_url:
        services.append(
            {
                "id": f"{did}#endpoint",
                "type": AGENT_ENDPOINT_SERVICE,
                "serviceEndpoint": endpoint_url,
            }
        )
    document: dict[str, Any] = {"@context": [DID_CONTEXT, JWS_2020_CONTEXT], "id": did}
    if also_known_as:
        document["alsoKnownAs"] = also_known_as
    document["verificationMethod"] = methods
    document["authentication"] = references
    document["assertionMethod"] = references
    if services:
        document["service"] = services
    return document


def registry_document(did: str, jwks: dict[str, Any], public_url: str) -> dict[str, Any]:
    """The registry's own DID document: the keys that sign agent cards and tokens."""
    keys = [
        {
            "id": f"{did}#{key['kid']}",
            "type": "JsonWebKey2020",
            "controller": did,
            "publicKeyJwk": {
                name: value
                for name, value in key.items()
                if name in ("kty", "crv", "x", "y", "n", "e")
            },
        }
        for key in jwks["keys"]
    ]
    return {
        "@context": [DID_CONTEXT, JWS_2020_CONTEXT],
        "id": did,
        "verificationMethod": keys,
        "assertionMethod": [key["id"] for key in keys],
        "service": [
            {
                "id": f"{did}#oauth",
                "type": "OAuthAuthorizationServer",
                "serviceEndpoint": f"{public_url}/.well-known/oauth-authorization-server",
            },
            {
                "id": f"{did}#jwks",
                "type": "JsonWebKeySet",
                "serviceEndpoint": f"{public_url}/.well-known/jwks.json",
            },
        ],
    }


def resolution_result(
    document: dict[str, Any] | None, *, metadata: dict[str, Any], error: str | None = None
) -> dict[str, Any]:
    """A DID resolution result (W3C DID Resolution): document plus both metadata objects."""
    resolution_metadata: dict[str, Any] = {"contentType": DID_CONTENT_TYPE}
    if error:
        resolution_metadata = {"error": error}
    return {
        "@context": RESOLUTION_CONTEXT,
        "didDocument": document,
        "didResolutionMetadata": resolution_metadata,
        "didDocumentMetadata": metadata,
    }
