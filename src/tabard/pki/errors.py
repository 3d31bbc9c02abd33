"""PKI errors.

Problems with a submitted CA, CSR or certificate are 400s whose `code` names the rule broken.
`CertificateRefused` is not an API error: it is why a certificate login was refused, which the
token endpoint answers in OAuth's shape (`invalid_client`) with the same stable code.
"""

from __future__ import annotations

from typing import ClassVar

from tabard.core.errors import BadRequest, Conflict, NotFound


class CaNotFound(NotFound):
    code = "CA_NOT_FOUND"
    title = "Certificate authority not found"


class CertificateNotFound(NotFound):
    code = "CERTIFICATE_NOT_FOUND"
    title = "Certificate not found"


class PinNotFound(NotFound):
    code = "CERTIFICATE_PIN_NOT_FOUND"
    title = "The agent has no pinned certificate"


class InvalidCa(BadRequest):
    """An uploaded CA breaks a rule; `reason` names it (also in the problem's `reason` member)."""

    code = "INVALID_CA"
    title = "The CA certificate is not acceptable"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail, reason=reason)


class InvalidCertificate(BadRequest):
    """A CSR or a certificate to register breaks a rule; `reason` names it."""

    code = "INVALID_CERTIFICATE"
    title = "The certificate or CSR is not acceptable"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail, reason=reason)


class CaAlreadyRegistered(Conflict):
    code = "CA_ALREADY_REGISTERED"
    title = "This CA certificate is already registered"


class CaReplaced(Conflict):
    code = "CA_REPLACED"
    title = "The CA has been replaced"


class CaCannotIssue(Conflict):
    code = "CA_KEY_UNAVAILABLE"
    title = "Tabard does not hold this CA's key"


class NoActiveCa(Conflict):
    code = "NO_ACTIVE_CA"
    title = "The organization has no active CA"


class CertificateAlreadyRevoked(Conflict):
    code = "CERTIFICATE_ALREADY_REVOKED"
    title = "The certificate is already revoked"


class CertificateRefused(Exception):
    """A certificate login was refused; `code` is stable and documented (docs/pki.md)."""

    descriptions: ClassVar[dict[str, str]] = {
        "CERTIFICATE_MALFORMED": "The client certificate cannot be read",
        "CERTIFICATE_UNTRUSTED": "The certificate does not chain to an active CA of its org",
        "CERTIFICATE_CA_REPLACED": "The certificate was issued by a CA that has been replaced",
        "CERTIFICATE_EXPIRED": "The certificate has expired",
        "CERTIFICATE_NOT_YET_VALID": "The certificate is not valid yet",
        "CERTIFICATE_KEY_TOO_WEAK": "The certificate's key is too weak",
        "CERTIFICATE_NOT_CLIENT_AUTH": "The certificate is not for TLS client authentication",
        "CERTIFICATE_IS_CA": "A CA certificate cannot authenticate an agent",
        "CERTIFICATE_SPIFFE_ID_INVALID": "The certificate must carry exactly one SPIFFE ID",
        "CERTIFICATE_SPIFFE_ID_MISMATCH": "The certificate's SPIFFE ID does not match the client",
        "CERTIFICATE_REVOKED": "Certificate has been revoked",
        "CERTIFICATE_MISMATCH": "This is not the agent's pinned certificate",
        "ORG_NOT_ACTIVE": "The organization is not active",
        "ORG_SUSPENDED": "The organization is suspended",
        "AGENT_NOT_FOUND": "No such agent",
        "AGENT_NOT_ACTIVE": "The agent is not active",
    }

    def __init__(self, code: str, detail: str | None = None, org_id: str | None = None) -> None:
        self.code = code
        self.description = detail or self.descriptions[code]
        self.org_id = org_id
        super().__init__(self.description)
