"""What the PKI modules share: the hooks through which revocation reaches the token service, and
the one way a PKI change is audited and announced.

The domain splits by concept: `authorities` (org CAs), `certificates` (agent certificates and
pins), `revocations` (revocation, CRLs), `bundles` (trust bundles), `login` (certificate
authentication for the token endpoint), `settings` (per-org certificate lifetime).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit import service as audit
from tabard.core import outbox
from tabard.core.context import Context
from tabard.core.hooks import Hook
from tabard.registry.service import AgentRef


@dataclass(frozen=True, slots=True)
class CertificateRef:
    """A certificate as tokens name it: `key` is the value of their `cert` claim."""

    org_id: str
    key: str


@dataclass(frozen=True, slots=True)
class CaRef:
    org_id: str
    ca_id: str


# The token service kills tokens issued from (or bound to) a certificate here, and every token
# issued from any certificate of a replaced CA, in the same transaction.
certificate_revoked: Hook[CertificateRef] = Hook("pki.certificate_revoked")
ca_replaced: Hook[CaRef] = Hook("pki.ca_replaced")
# Whoever remembers certificate logins forgets the agent's when its pin changes.
pin_changed: Hook[AgentRef] = Hook("pki.pin_changed")


def certificate_key(ca_id: str | None, serial: str, thumbprint: str) -> str:
    """How tokens issued from a certificate name it (their `cert` claim): the issuing CA and the
    serial, or the thumbprint for a self-signed certificate."""
    return f"{ca_id}/{serial}" if ca_id else f"x5t/{thumbprint}"


def ca_of_certificate_key(key: str) -> str | None:
    ca_id, _, _ = key.partition("/")
    return None if ca_id == "x5t" else ca_id


async def record_change(
    session: AsyncSession,
    ctx: Context,
    action: str,
    org_id: str,
    target: str,
    details: dict[str, Any],
) -> None:
    """Audit and announce one PKI change (same transaction)."""
    await audit.record(session, ctx, action=action, org_id=org_id, target=target, details=details)
    await outbox.emit(session, ctx.clock, type=action, org_id=org_id, subject=target, data=details)
