"""Client authentication at the token endpoint (RFC 6749 §2.3, RFC 7523 §2.2 and §3).

Methods: `client_secret_basic` (HTTP Basic with form-urlencoded parts, RFC 6749 §2.3.1),
`client_secret_post` (the same two values in the body), `private_key_jwt` (a JWT the client
signs with a key it registered, or with its certificate's key, sent in the `x5c` header), and
`tls_client_auth` / `self_signed_tls_client_auth` (RFC 8705 §2: the TLS client certificate is
the credential, `client_id` is the agent's SPIFFE ID). A request may use exactly one. Every
failure is `invalid_client`; the exact reason goes to the audit log. A refused certificate
also tells the client its stable code (it has proven it holds the certificate's key, so the
reason is no oracle).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwk, jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet
from joserfc.jws import JWSRegistry
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.clock import Clock
from tabard.core.jose import b64url_json
from tabard.core.kv import KeyValueStore
from tabard.credentials import service as credentials
from tabard.credentials.errors import ClientAuthenticationFailed
from tabard.pki import certs
from tabard.pki import login as pki_login
from tabard.pki.errors import CertificateRefused
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
_MAX_X5C = 8


class _AssertionRegistry(JWSRegistry):
    """The algorithm allow-list of client assertions. joserfc bounds a JWS header to 512 bytes
    by default, less than one certificate in `x5c`; the form's own size bound (64 KiB) applies
    instead."""

    max_header_length = 64 * 1024


_ASSERTION_REGISTRY = _AssertionRegistry(algorithms=ASSERTION_ALGORITHMS)


class AuthMethod:
    """The `token_endpoint_auth_method` names of RFC 7591 §2."""

    SECRET_BASIC = "client_secret_basic"  # noqa: S105 - method names, not secrets
    SECRET_POST = "client_secret_post"  # noqa: S105
    PRIVATE_KEY_JWT = "private_key_jwt"
    TLS_CLIENT_AUTH = pki_login.TLS_CLIENT_AUTH
    SELF_SIGNED_TLS_CLIENT_AUTH = pki_login.SELF_SIGNED_TLS_CLIENT_AUTH


SUPPORTED_METHODS = (
    AuthMethod.SECRET_BASIC,
    AuthMethod.SECRET_POST,
    AuthMethod.PRIVATE_KEY_JWT,
    AuthMethod.TLS_CLIENT_AUTH,
    AuthMethod.SELF_SIGNED_TLS_CLIENT_AUTH,
)


@dataclass(frozen=True, slots=True)
class AuthenticatedClient:
    """Who authenticated: a client credential, or an agent certificate (`certificate`; its
    `client_id` is the agent's SPIFFE ID and it has no credential id)."""

    client_id: str
    credential_id: str | None
    agent_id: str
    org_id: str
    method: str
    expires_at: float | None = None  # the credential's or certificate's expiry (Unix seconds)
    scope: tuple[str, ...] | None = None  # what the credential may ask for (None: no limit)
    certificate: pki_login.CertificateLogin | None = None


@dataclass(frozen=True, slots=True)
class ClientAuthentication:
    """What a request offers to prove who the client is."""

    method: str
    client_id: str
    secret: str | None = None
    assertion: str | None = None
    certificates: tuple[x509.Certificate, ...] = ()  # leaf first: mTLS, or an assertion's x5c

    @property
    def claimed_client_id(self) -> str:
        """Who the request claims to be, before any check: the client id, else the one URI SAN
        of its certificate (RFC 8705 §2 lets `client_id` be left out), so each agent's
        certificate logins are counted apart rather than all together."""
        if self.client_id or not self.certificates:
            return self.client_id
        names = certs.uri_names(self.certificates[0])
        return names[0] if len(names) == 1 else ""


def presented_authentication(
    authorization: str | None,
    form: Mapping[str, str],
    certificates: tuple[x509.Certificate, ...] = (),
) -> ClientAuthentication | None:
    """The one authentication method in the request, or None when it offers none.

    A client certificate is the credential only when nothing else is offered (with a secret
    it merely binds the token, RFC 8705 §3). Offering several methods (RFC 6749 §2.3) or a
    malformed one is `invalid_request`/`invalid_client`.
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
    if not offered and certificates:
        offered.append(
            ClientAuthentication(
                AuthMethod.TLS_CLIENT_AUTH, form.get("client_id", ""), certificates=certificates
            )
        )
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
    header, claims = _unverified_parts(assertion)
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidClient("the client assertion has no `sub`", reason="assertion_malformed")
    chain = _x5c_chain(header["x5c"]) if "x5c" in header else ()
    return ClientAuthentication(
        AuthMethod.PRIVATE_KEY_JWT, subject, assertion=assertion, certificates=chain
    )


def _unverified_parts(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload, read only to learn whose keys to verify with; nothing in them is
    trusted yet."""
    parts = assertion.split(".")
    try:
        if len(parts) != 3:
            raise ValueError("not a compact JWS")
        header, payload = b64url_json(parts[0]), b64url_json(parts[1])
    except ValueError:
        raise InvalidClient(
            "the client assertion is not a JWT", reason="assertion_malformed"
        ) from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise InvalidClient("the client assertion is not a JWT", reason="assertion_malformed")
    return header, payload


def _x5c_chain(x5c: object) -> tuple[x509.Certificate, ...]:
    """RFC 7515 §4.1.6: base64 (not base64url) DER certificates, the signer's first."""
    try:
        if not isinstance(x5c, list) or not 0 < len(x5c) <= _MAX_X5C:
            raise ValueError("x5c must be a list of 1 to 8 certificates")
        return tuple(
            x509.load_der_x509_certificate(base64.b64decode(str(item), validate=True))
            for item in x5c
        )
    except (ValueError, binascii.Error):
        raise certificate_refusal(CertificateRefused("CERTIFICATE_MALFORMED")) from None


def certificate_refusal(refused: CertificateRefused) -> InvalidClient:
    """`invalid_client` telling the client the stable code of the certificate's refusal."""
    refusal = InvalidClient(refused.description, reason=refused.code, code=refused.code)
    refusal.org_id = refused.org_id
    return refusal


class ClientAuthenticator:
    """Verifies presented client credentials against the credentials domain."""

    def __init__(
        self,
        *,
        secret_key: bytes,
        kv: KeyValueStore,
        clock: Clock,
        audiences: tuple[str, ...],
        trust_domain: str,
    ) -> None:
        self._secret_key = secret_key
        self._kv = kv
        self._clock = clock
        self._audiences = audiences
        self._trust_domain = trust_domain
        self._remote_keys: dict[str, tuple[float, dict[str, Any]]] = {}

    async def authenticate(
        self, session: AsyncSession, presented: ClientAuthentication
    ) -> AuthenticatedClient:
        if presented.certificates:
            return await self._certificate_holder(session, presented)
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
            scope=tuple(credential.scope) if credential.scope is not None else None,
        )

    async def _certificate_holder(
        self, session: AsyncSession, presented: ClientAuthentication
    ) -> AuthenticatedClient:
        """RFC 8705 §2 (possession proven by TLS) or RFC 7523 with `x5c` (proven by the
        assertion's signature, checked first), then the certificate itself (`pki.login`)."""
        leaf = presented.certificates[0]
        if presented.assertion is not None:
            await self._verify_assertion(presented.assertion, presented.client_id, _key_of(leaf))
        try:
            login = await pki_login.authenticate_certificate(
                session,
                self._trust_domain,
                presented.certificates,
                presented.client_id or None,
                self._clock.now(),
            )
        except CertificateRefused as refused:
            raise certificate_refusal(refused) from None
        return AuthenticatedClient(
            client_id=login.spiffe_id,
            credential_id=None,
            agent_id=login.agent_id,
            org_id=login.org_id,
            method=presented.method if presented.assertion else login.method,
            expires_at=login.not_after.timestamp(),
            certificate=login,
        )

    async def _verify_assertion(
        self, assertion: str, client_id: str, keys: dict[str, Any] | Key
    ) -> None:
        """RFC 7523 §3: signature by a registered key (or the certificate's), iss = sub =
        client_id, aud, exp, jti."""
        try:
            key = KeySet.import_key_set(keys) if isinstance(keys, dict) else keys  # type: ignore[arg-type]
            token = jwt.decode(assertion, key, registry=_ASSERTION_REGISTRY)
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


def _key_of(certificate: x509.Certificate) -> Key:
    """The certificate's public key as a JOSE key (it verifies an `x5c` assertion)."""
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise certificate_refusal(CertificateRefused("CERTIFICATE_KEY_TOO_WEAK"))
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if isinstance(public_key, rsa.RSAPublicKey):
        return jwk.import_key(pem, "RSA")
    return jwk.import_key(pem, "EC")
