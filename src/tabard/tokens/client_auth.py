"""Client authentication at the token endpoint (RFC 6749 §2.3, RFC 7523 §2.2 and §3).

Three methods: `client_secret_basic` (HTTP Basic with form-urlencoded parts, RFC 6749 §2.3.1),
`client_secret_post` (the same two values in the body), and `private_key_jwt` (a JWT the client
signs with a key it registered). A request may use exactly one. Every failure is
`invalid_client`; the exact reason goes to the audit log, never to the client.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.clock import Clock
from tabard.core.jose import b64url_json
from tabard.core.kv import KeyValueStore
from tabard.credentials import service as credentials
from tabard.credentials.errors import ClientAuthenticationFailed
from tabard.tokens.access_tokens import audience_of
from tabard.tokens.errors import InvalidClient, InvalidRequest

JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ("ES256", "ES384", "ES512", "Ed25519", "EdDSA", "RS256", "PS256")
# RFC 7523 §3 leaves "unreasonably far in the future" to us: an hour is what clients send by
# default (Authlib) and what large providers accept; `jti` stays single-use throughout.
ASSERTION_MAX_LIFETIME_SECONDS = 300
_LEEWAY_SECONDS = 30
_JWKS_URI_CACHE_SECONDS = 300.0
_JWKS_URI_REFETCH_SECONDS = 5.0


class AuthMethod:
    """The `token_endpoint_auth_method` names of RFC 7591 §2."""

    SECRET_BASIC = "client_secret_basic"  # noqa: S105 - method names, not secrets
    SECRET_POST = "client_secret_post"  # noqa: S105
    PRIVATE_KEY_JWT = "private_key_jwt"


SUPPORTED_METHODS = (AuthMethod.SECRET_BASIC, AuthMethod.SECRET_POST, AuthMethod.PRIVATE_KEY_JWT)


@dataclass(frozen=True, slots=True)
class AuthenticatedClient:
    client_id: str
    credential_id: str
    agent_id: str
    org_id: str
    method: str
    expires_at: float | None = None  # the credential's expiry (Unix seconds)


@dataclass(frozen=True, slots=True)
class ClientAuthentication:
    """What a request offers to prove who the client is."""

    method: str
    client_id: str
    secret: str | None = None
    assertion: str | None = None


def presented_authentication(
    authorization: str | None, form: Mapping[str, str]
) -> ClientAuthentication | None:
    """The one authentication method in the request, or None when it offers none.

    Offering several (RFC 6749 §2.3) or a malformed one is `invalid_request`/`invalid_client`.
    """
    offered: list[ClientAuthentication] = []
    if authorization and authorization[:6].lower() == "basic ":
        offered.append(_basic(authorization[6:].strip()))
    if "client_secret" in form:
        offered.append(
            ClientAuthentication(
                AuthMethod.SECRET_POST, form.get("client_id", ""), secret=form["client_secret"]
            )
        )
    if "client_assertion" in form or "client_assertion_type" in form:
        offered.append(_assertion(form))
    if len(offered) > 1:
        raise InvalidRequest("use exactly one client authentication method")
    if not offered:
        return None
    presented = offered[0]
    if "client_id" in form and form["client_id"] != presented.client_id:
        raise InvalidClient("client_id does not match the authenticated client")
    return presented


def _basic(encoded: str) -> ClientAuthentication:
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("malformed Basic credentials", reason="malformed_basic") from None
    client_id, separator, secret = decoded.partition(":")
    if not separator or not client_id:
        raise InvalidClient("malformed Basic credentials", reason="malformed_basic")
    return ClientAuthentication(
        AuthMethod.SECRET_BASIC, unquote_plus(client_id), secret=unquote_plus(secret)
    )


def _assertion(form: Mapping[str, str]) -> ClientAuthentication:
    if form.get("client_assertion_type") != JWT_BEARER_ASSERTION:
        raise InvalidRequest(f"client_assertion_type must be {JWT_BEARER_ASSERTION}")
    assertion = form.get("client_assertion", "")
    claims = _unverified_claims(assertion)
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidClient("the client assertion has no `sub`", reason="assertion_malformed")
    return ClientAuthentication(AuthMethod.PRIVATE_KEY_JWT, subject, assertion=assertion)


def _unverified_claims(assertion: str) -> dict[str, Any]:
    """The payload, read only to learn whose keys to verify with; nothing in it is trusted yet."""
    parts = assertion.split(".")
    try:
        if len(parts) != 3:
            raise ValueError("not a compact JWS")
        payload = b64url_json(parts[1])
    except ValueError:
        raise InvalidClient(
            "the client assertion is not a JWT", reason="assertion_malformed"
        ) from None
    if not isinstance(payload, dict):
        raise InvalidClient("the client assertion is not a JWT", reason="assertion_malformed")
    return payload


class ClientAuthenticator:
    """Verifies presented client credentials against the credentials domain."""

    def __init__(
        self,
        *,
        secret_key: bytes,
        kv: KeyValueStore,
        clock: Clock,
        audiences: tuple[str, ...],
    ) -> None:
        self._secret_key = secret_key
        self._kv = kv
        self._clock = clock
        self._audiences = audiences
        self._remote_keys: dict[str, tuple[float, dict[str, Any]]] = {}

    async def authenticate(
        self, session: AsyncSession, presented: ClientAuthentication
    ) -> AuthenticatedClient:
        try:
            if presented.assertion is not None:
                credential = await credentials.authenticate_key_holder(
                    session, presented.client_id, self._clock
                )
                try:
                    await self._verify_with_client_keys(
                        presented.assertion,
                        credential.client_id,
                        credential.jwks,
                        credential.jwks_uri,
                    )
                except InvalidClient as exc:
                    # The client is known: its org's audit log records the refused assertion.
                    exc.org_id = credential.org_id
                    raise
            else:
                credential = await credentials.authenticate_secret(
                    session,
                    self._secret_key,
                    presented.client_id,
                    presented.secret or "",
                    self._clock,
                )
        except ClientAuthenticationFailed as exc:
            refusal = InvalidClient(reason=exc.reason)
            refusal.org_id = exc.org_id
            raise refusal from None
        return AuthenticatedClient(
            client_id=credential.client_id,
            credential_id=credential.id,
            agent_id=credential.agent_id,
            org_id=credential.org_id,
            method=presented.method,
            expires_at=credential.expires_at.timestamp() if credential.expires_at else None,
        )

    async def _verify_assertion(self, assertion: str, client_id: str, jwks: dict[str, Any]) -> None:
        """RFC 7523 §3: signature by a registered key, iss = sub = client_id, aud, exp, jti."""
        try:
            keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
            token = jwt.decode(assertion, keys, algorithms=list(ASSERTION_ALGORITHMS))
        except (JoseError, ValueError):
            raise InvalidClient(reason="assertion_signature_invalid") from None
        claims = dict(token.claims)
        now = self._clock.timestamp()
        self._check_assertion_claims(claims, client_id, now)
        jti_key = f"assertion:jti:{client_id}:{claims['jti']}"
        ttl = max(1.0, float(claims["exp"]) - now + _LEEWAY_SECONDS)
        if not await self._kv.set_if_absent(jti_key, b"1", ttl_seconds=ttl):
            raise InvalidClient(reason="assertion_replayed")

    def _check_assertion_claims(self, claims: dict[str, Any], client_id: str, now: float) -> None:
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            raise InvalidClient(reason="assertion_issuer_mismatch")
        if not audience_of(claims) & set(self._audiences):
            raise InvalidClient(reason="assertion_audience_mismatch")
        expires = claims.get("exp")
        if not isinstance(expires, int | float) or expires <= now - _LEEWAY_SECONDS:
            raise InvalidClient(reason="assertion_expired")
        if expires > now + ASSERTION_MAX_LIFETIME_SECONDS + _LEEWAY_SECONDS:
            raise InvalidClient(reason="assertion_lifetime_too_long")
        for claim in ("iat", "nbf"):
            value = claims.get(claim)
            if isinstance(value, int | float) and value > now + _LEEWAY_SECONDS:
                raise InvalidClient(reason=f"assertion_{claim}_in_future")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 0 < len(jti) <= 200:
            raise InvalidClient(reason="assertion_without_jti")

    async def _verify_with_client_keys(
        self, assertion: str, client_id: str, jwks: dict[str, Any] | None, jwks_uri: str | None
    ) -> None:
        """Verify with the registered keys; a `jwks_uri` client that rotated its key gets one
        fresh fetch (at most every few seconds), so it is not refused until the cache expires."""
        keys = await self._client_keys(jwks, jwks_uri)
        try:
            await self._verify_assertion(assertion, client_id, keys)
        except InvalidClient as exc:
            if exc.reason != "assertion_signature_invalid" or not self._may_refetch(jwks_uri):
                raise
            keys = await self._client_keys(None, jwks_uri, fresh=True)
            await self._verify_assertion(assertion, client_id, keys)

    def _may_refetch(self, jwks_uri: str | None) -> bool:
        cached = self._remote_keys.get(jwks_uri or "")
        fetched_at = cached[0] - _JWKS_URI_CACHE_SECONDS if cached else 0.0
        elapsed = self._clock.timestamp() - fetched_at
        return jwks_uri is not None and elapsed >= _JWKS_URI_REFETCH_SECONDS

    async def _client_keys(
        self, jwks: dict[str, Any] | None, jwks_uri: str | None, *, fresh: bool = False
    ) -> dict[str, Any]:
        if jwks is not None:
            return jwks
        uri = jwks_uri or ""
        cached = self._remote_keys.get(uri)
        if cached is not None and cached[0] > self._clock.timestamp() and not fresh:
            return cached[1]
        try:
            async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as http:
                response = await http.get(uri)
            response.raise_for_status()
            keys: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError):
            raise InvalidClient(reason="jwks_uri_unavailable") from None
        self._remote_keys[uri] = (self._clock.timestamp() + _JWKS_URI_CACHE_SECONDS, keys)
        return keys
