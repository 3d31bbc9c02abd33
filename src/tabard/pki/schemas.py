"""PKI API shapes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_CERTIFICATE_LIFETIME_SECONDS = 90 * 86400
MIN_CERTIFICATE_LIFETIME_SECONDS = 300
_PEM_LIMIT = 64 * 1024

Pem = Annotated[str, Field(min_length=1, max_length=_PEM_LIMIT)]
Lifetime = Annotated[
    int, Field(ge=MIN_CERTIFICATE_LIFETIME_SECONDS, le=MAX_CERTIFICATE_LIFETIME_SECONDS)
]


class CaSource(StrEnum):
    GENERATED = "generated"
    UPLOADED = "uploaded"


class CaStatus(StrEnum):
    ACTIVE = "active"
    REPLACED = "replaced"


class CertificateSource(StrEnum):
    ISSUED = "issued"  # Tabard signed the agent's CSR
    REGISTERED = "registered"  # issued by the org under its CA, registered with Tabard
    SELF_SIGNED = "self_signed"  # RFC 8705 §2.2: trusted because the org registered it


class CertificateStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class RevocationReason(StrEnum):
    """RFC 5280 §5.3.1 reason codes (certificateHold is not offered: revocation is final)."""

    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "keyCompromise"
    CA_COMPROMISE = "cACompromise"
    AFFILIATION_CHANGED = "affiliationChanged"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessationOfOperation"
    PRIVILEGE_WITHDRAWN = "privilegeWithdrawn"


class GenerateCa(BaseModel):
    """Tabard generates the CA and keeps its key sealed under the master key."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["generate"]
    key_algorithm: Literal["EC-P256", "EC-P384", "RSA-3072"] = "EC-P256"
    common_name: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    validity_days: Annotated[int, Field(ge=1, le=7300)] = 1825


class UploadCa(BaseModel):
    """The org brings its CA: the trust anchor, optional intermediates (issuing CA first), and
    optionally the issuing CA's private key so Tabard can sign CSRs and CRLs with it."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["upload"]
    certificate_pem: Pem
    intermediates_pem: Pem | None = None
    private_key_pem: Pem | None = None


CaCreate = Annotated[GenerateCa | UploadCa, Field(discriminator="source")]


class CaOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    org_id: str
    source: CaSource
    status: CaStatus
    subject: str
    key_algorithm: str
    fingerprint: str = Field(description="x5t#S256 of the CA certificate")
    can_issue: bool = Field(default=False, description="Tabard holds the issuing key (CSRs, CRLs)")
    certificate_pem: str
    intermediates_pem: str
    not_before: datetime
    not_after: datetime
    created_at: datetime
    replaced_at: datetime | None
    replaced_by: str | None

    @classmethod
    def of(cls, ca: Any) -> CaOut:
        """From a CA row: everything but the sealed key, which only says whether it exists."""
        return cls.model_validate(ca).model_copy(update={"can_issue": ca.sealed_key is not None})


class CertificateRequest(BaseModel):
    """A CSR for Tabard to sign, or a certificate the org issued (or self-signed) to register."""

    model_config = ConfigDict(extra="forbid")

    csr_pem: Pem | None = None
    certificate_pem: Pem | None = Field(
        default=None, description="Leaf first, then any intermediates not registered with the CA"
    )
    ca_id: str | None = Field(default=None, description="Which active CA signs (default: newest)")
    lifetime_seconds: Lifetime | None = Field(
        default=None, description="Shorter than the org's certificate lifetime, if wanted"
    )
    pin: bool = Field(
        default=False,
        description="Make this the agent's login certificate at once (org keys and admin only)",
    )


class CertificateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    org_id: str
    agent_id: str
    ca_id: str | None
    source: CertificateSource
    status: CertificateStatus
    serial: str
    thumbprint: str = Field(description="x5t#S256")
    spiffe_id: str
    key_algorithm: str
    certificate_pem: str
    chain_pem: str = Field(default="", description="The issuing CA's chain up to the anchor")
    not_before: datetime
    not_after: datetime
    created_at: datetime
    revoked_at: datetime | None
    revocation_reason: str | None
    pinned: bool = False


class PinUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    certificate_id: str


class PinOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    agent_id: str
    thumbprint: str
    certificate_id: str | None
    pinned_by: str
    pinned_at: datetime


class RevocationCreate(BaseModel):
    """Revoke by (issuing CA, serial) — a certificate Tabard issued, or one the org issued under
    its CA whether or not it was ever used — or a registered certificate by its id."""

    model_config = ConfigDict(extra="forbid")

    ca_id: str | None = None
    serial: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    certificate_id: str | None = None
    reason: RevocationReason = RevocationReason.UNSPECIFIED


class RevocationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    org_id: str
    ca_id: str | None
    serial: str
    certificate_id: str | None
    agent_id: str | None
    reason: RevocationReason
    revoked_at: datetime


class PkiSettingsOut(BaseModel):
    certificate_lifetime_seconds: int


class PkiSettingsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    certificate_lifetime_seconds: Lifetime
