"""Token-service errors in the OAuth 2.0 shape (RFC 6749 §5.2), separate from the problem+json tree.

    OAuthError                     400 (error code in `error`)
    ├── InvalidRequest             400 invalid_request
    ├── InvalidClient              401 invalid_client (+ WWW-Authenticate)
    ├── InvalidGrant               400 invalid_grant
    ├── UnauthorizedClient         400 unauthorized_client
    ├── UnsupportedGrantType       400 unsupported_grant_type
    ├── InvalidScope               400 invalid_scope
    ├── InvalidTarget              400 invalid_target        (RFC 8707 §2)
    ├── InvalidDpopProofError      400 invalid_dpop_proof    (RFC 9449 §5)
    └── UseDpopNonceError          400 use_dpop_nonce        (RFC 9449 §8, with DPoP-Nonce)

On protected resources a bad access token is `InvalidToken` (RFC 6750 §3.1), a problem+json 401
whose `WWW-Authenticate` carries the RFC's error attributes.
"""

from __future__ import annotations

from typing import ClassVar

from tabard.core.errors import Forbidden, Unauthenticated


class OAuthError(Exception):
    """An error answered as `{"error", "error_description"}` with `status`.

    `reason` is for the audit log only (never sent): why exactly a client was refused.
    """

    status: ClassVar[int] = 400
    error: ClassVar[str] = "invalid_request"

    def __init__(
        self, description: str, *, reason: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(description)
        self.description = description
        self.reason = reason or self.error
        # A stable Tabard code the client may see (certificate and binding refusals), or None.
        self.code = code
        self.headers: dict[str, str] = {}
        # Who was refused, when known: the audit records the denial on that org's chain.
        self.client_id: str | None = None
        self.org_id: str | None = None


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidClient(OAuthError):
    status = 401
    error = "invalid_client"

    def __init__(
        self,
        description: str = "client authentication failed",
        *,
        reason: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(description, reason=reason, code=code)
        self.headers["WWW-Authenticate"] = 'Basic realm="tabard"'


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class InvalidTarget(OAuthError):
    error = "invalid_target"


class InvalidDpopProofError(OAuthError):
    error = "invalid_dpop_proof"


class UseDpopNonceError(OAuthError):
    error = "use_dpop_nonce"

    def __init__(self, description: str, nonce: str) -> None:
        super().__init__(description)
        self.headers["DPoP-Nonce"] = nonce


class InvalidToken(Unauthenticated):
    """The access token presented to an API is missing its proof, revoked, expired or forged."""

    code = "INVALID_TOKEN"
    title = "Invalid access token"

    def __init__(
        self, detail: str, *, scheme: str = "Bearer", error: str = "invalid_token", **extra: str
    ) -> None:
        super().__init__(detail)
        attributes = {"realm": "tabard", "error": error, "error_description": detail, **extra}
        rendered = ", ".join(f'{name}="{_quoted(value)}"' for name, value in attributes.items())
        self.headers["WWW-Authenticate"] = f"{scheme} {rendered}"
        if scheme == "DPoP":
            self.headers["WWW-Authenticate"] += ', algs="ES256 Ed25519 EdDSA RS256 PS256 ES384"'


class InsufficientScope(Forbidden):
    code = "INSUFFICIENT_SCOPE"
    title = "The access token lacks the scope this call needs"

    def __init__(self, detail: str, *, scope: str) -> None:
        super().__init__(detail)
        self.headers["WWW-Authenticate"] = (
            f'Bearer realm="tabard", error="insufficient_scope", scope="{scope}"'
        )


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
