"""OAuth 2.0 grants, one module per grant type: each turns a token request into a `Grant`."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from tabard.tokens.errors import InvalidScope, InvalidTarget

OPENID_SCOPES = ("openid", "profile")
_MAX_AUDIENCES = 10


def granted_scope(requested: str | None, allowed: Iterable[str]) -> tuple[str, ...]:
    """The requested scope if the client may have all of it (RFC 6749 §3.3); none requested
    means everything allowed. Scope tokens keep the client's order, without duplicates."""
    allowed_set = set(allowed)
    if requested is None:
        return tuple(sorted(allowed_set))
    wanted = list(dict.fromkeys(requested.split()))
    if not wanted:
        raise InvalidScope("scope is empty")
    refused = [token for token in wanted if token not in allowed_set]
    if refused:
        raise InvalidScope(f"scope not allowed for this client: {' '.join(refused)}")
    return tuple(wanted)


def audiences(resources: list[str], names: list[str], issuer: str) -> tuple[str, ...]:
    """`aud` from RFC 8707 `resource` URIs and RFC 8693 `audience` names; else the issuer."""
    for resource in resources:
        # RFC 3986 §4.3: an absolute URI is anything with a scheme (https URLs, URNs).
        if not urlsplit(resource).scheme or "#" in resource:
            raise InvalidTarget(f"resource must be an absolute URI without fragment: {resource!r}")
    chosen = tuple(dict.fromkeys([*resources, *names]))
    if len(chosen) > _MAX_AUDIENCES:
        raise InvalidTarget(f"at most {_MAX_AUDIENCES} resources or audiences")
    return chosen or (issuer,)
