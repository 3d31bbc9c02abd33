"""Credentials errors."""

from __future__ import annotations

from tabard.core.errors import Conflict, NotFound, Unauthenticated


class CredentialNotFound(NotFound):
    code = "CREDENTIAL_NOT_FOUND"
    title = "Credential not found"


class CredentialRevoked(Conflict):
    code = "CREDENTIAL_REVOKED"
    title = "The credential is revoked"


class CredentialMethodMismatch(Conflict):
    code = "CREDENTIAL_METHOD_MISMATCH"
    title = "The operation does not apply to this credential's authentication method"


class ClientAuthenticationFailed(Unauthenticated):
    """A client could not be authenticated; `reason` says why (for the audit, not the client)."""

    code = "INVALID_CLIENT"
    title = "Client authentication failed"

    def __init__(self, reason: str, org_id: str | None = None) -> None:
        super().__init__("client authentication failed")
        self.reason = reason
        self.org_id = org_id
