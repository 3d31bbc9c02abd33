"""Tabard's signing keys and the JWKS that publishes them (RFC 7517; `kid` per RFC 7638).

One key is active at a time; it signs agent cards (detached JWS, RFC 7515 appendix F) and, with
the token service, access tokens. Private keys are generated here, sealed with the master key and
opened only in memory. The first key is created on first use; replicas racing to create it are
settled by a unique index on the active key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from joserfc import jws
from joserfc.jwk import ECKey, import_key
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.clock import Clock
from tabard.core.db import Database
from tabard.core.keystore import KeyStore
from tabard.signing.errors import SigningKeyUnavailable
from tabard.signing.models import SigningKey

DEFAULT_ALGORITHM = "ES256"
_ACTIVE = "active"
_SEAL_CONTEXT = b"tabard-signing-key:"


@dataclass(frozen=True, slots=True)
class SigningMaterial:
    """The opened active key: what signing needs, kept only in memory."""

    kid: str
    alg: str
    private_key: ECKey


async def active_key(database: Database, keystore: KeyStore, clock: Clock) -> SigningMaterial:
    """The active signing key, creating the first one if there is none yet."""
    async with database.read_only() as session:
        row = await _active_row(session)
    if row is None:
        async with database.unit_of_work() as session:
            row = await _create_first_key(session, keystore, clock)
    return _open(row, keystore)


async def jwks(session: AsyncSession) -> dict[str, Any]:
    """The public keys that may still verify a signature, as a JWK Set."""
    statement = select(SigningKey).where(SigningKey.status != "revoked").order_by(SigningKey.kid)
    rows = (await session.execute(statement)).scalars()
    return {"keys": [_published(row) for row in rows]}


def sign_detached(material: SigningMaterial, payload: bytes, **header: str) -> tuple[str, str]:
    """A JWS over `payload` with the payload detached: (protected header, signature), base64url."""
    protected = {"alg": material.alg, "kid": material.kid, **header}
    compact = jws.serialize_compact(protected, payload, material.private_key, [material.alg])
    encoded_header, _, signature = compact.split(".")
    return encoded_header, signature


async def _active_row(session: AsyncSession) -> SigningKey | None:
    statement = select(SigningKey).where(SigningKey.status == _ACTIVE)
    return (await session.execute(statement)).scalar_one_or_none()


async def _create_first_key(session: AsyncSession, keystore: KeyStore, clock: Clock) -> SigningKey:
    key = ECKey.generate_key("P-256", private=True)
    kid = key.thumbprint()
    row = SigningKey(
        kid=kid,
        alg=DEFAULT_ALGORITHM,
        status=_ACTIVE,
        public_jwk=dict(key.as_dict(private=False)),
        sealed_private_key=keystore.encrypt(key.as_pem(private=True), _SEAL_CONTEXT + kid.encode()),
        created_at=clock.now(),
    )
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        existing = await _active_row(session)  # another replica created it first
        if existing is None:
            raise
        return existing
    return row


def _open(row: SigningKey, keystore: KeyStore) -> SigningMaterial:
    try:
        pem = keystore.decrypt(row.sealed_private_key, _SEAL_CONTEXT + row.kid.encode())
    except InvalidTag:
        raise SigningKeyUnavailable(
            f"signing key {row.kid} cannot be opened with this master key; restore the master "
            "key (TABARD_MASTER_KEY or master.key) that was in use when it was created"
        ) from None
    key = import_key(pem, "EC")
    assert isinstance(key, ECKey)
    return SigningMaterial(kid=row.kid, alg=row.alg, private_key=key)


def _published(row: SigningKey) -> dict[str, Any]:
    return {**row.public_jwk, "kid": row.kid, "alg": row.alg, "use": "sig"}
