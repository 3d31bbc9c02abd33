"""Tabard's signing keys and the JWKS that publishes them (RFC 7517; `kid` per RFC 7638).

One key is active at a time; it signs access tokens, agent cards (detached JWS, RFC 7515
appendix F) and DID documents. Private keys are generated here, sealed with the master key and
opened only in memory (`keyring`). Rotation retires the active key: it stops signing at once but
stays published until the longest token it signed has expired, so no verifier sees a flag day.
Revoking removes keys from the JWKS at once (the emergency path).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from tabard.audit import service as audit
from tabard.core import outbox
from tabard.core.clock import Clock
from tabard.core.config import Settings
from tabard.core.context import Context
from tabard.core.db import Database
from tabard.core.hooks import Hook
from tabard.core.jose import b64url_encode
from tabard.core.keystore import KeyStore
from tabard.signing import keyring
from tabard.signing.algorithms import SigningAlgorithm, SigningMaterial, parse_algorithm
from tabard.signing.errors import SigningKeyRotationConflict
from tabard.signing.keyring import PublishedKeys, SigningKeys, keys_for
from tabard.signing.models import SigningKey
from tabard.signing.schemas import SigningKeyStatus

# Beyond the longest token lifetime, a retired key stays published for clock skew between
# verifiers (≤ 60 s) and for the few seconds other replicas may still sign with it before they
# re-read the active key (keyring.REFRESH_SECONDS).
RETIREMENT_LEEWAY = timedelta(seconds=120)
DEFAULT_ALGORITHM = SigningAlgorithm.ES256.value
_ACTIVE = SigningKeyStatus.ACTIVE.value
_RETIRED = SigningKeyStatus.RETIRED.value
_REVOKED = SigningKeyStatus.REVOKED.value

# Domains that honour signatures beyond the JWKS (the token service's revocation list) act on
# revoked kids here, inside the rotation's transaction.
keys_revoked: Hook[list[str]] = Hook("signing.keys_revoked")

__all__ = [
    "DEFAULT_ALGORITHM",
    "RETIREMENT_LEEWAY",
    "PublishedKeys",
    "Rotation",
    "SigningKeys",
    "SigningMaterial",
    "active_key",
    "ensure_key",
    "erase_spent_private_keys",
    "jwks",
    "keys_for",
    "keys_revoked",
    "list_keys",
    "rotate",
    "rotation_due",
    "sign_detached",
    "verification_keys",
]


@dataclass(frozen=True, slots=True)
class Rotation:
    """What a rotation did: the new active key, the key it replaced, and every key it revoked."""

    key: SigningKey
    previous_kid: str | None
    revoked_kids: list[str]
    # When the previous key leaves the JWKS (None when it was revoked or there was none).
    previous_publish_until: datetime | None = None


async def active_key(
    database: Database, keystore: KeyStore, clock: Clock, *, algorithm: str | None = None
) -> SigningMaterial:
    """The active signing key, opened (cached per process; creates the first key if none)."""
    return await keys_for(keystore, clock).active(database, algorithm)


async def ensure_key(
    database: Database, keystore: KeyStore, clock: Clock, *, algorithm: str | None = None
) -> None:
    """Make sure a signing key exists without decrypting it (what serving the JWKS needs)."""
    await keys_for(keystore, clock).ensure(database, algorithm)


async def verification_keys(
    database: Database, keystore: KeyStore, clock: Clock, *, kid: str | None = None
) -> PublishedKeys:
    """The published keys that may verify a live token, cached per process (see `SigningKeys`)."""
    return await keys_for(keystore, clock).verification_snapshot(database, kid)


async def jwks(session: AsyncSession, now: datetime | None = None) -> dict[str, Any]:
    """The JWK Set of keys that may still verify a signature (RFC 7517 §5), read directly.

    Given `now`, retired keys past their `publish_until` are left out, as the JWKS endpoint does.
    """
    rows = await keyring.published_rows(session, now)
    return keyring.published_keys(rows, read_at=0.0).key_set()


async def list_keys(session: AsyncSession) -> Sequence[SigningKey]:
    """Every signing key, newest first (rows are kept after retirement and revocation)."""
    statement = select(SigningKey).order_by(SigningKey.created_at.desc(), SigningKey.kid)
    return (await session.execute(statement)).scalars().all()


def sign_detached(material: SigningMaterial, payload: bytes, **header: str) -> tuple[str, str]:
    """A JWS over `payload` with the payload detached: (protected header, signature), base64url.

    RFC 7515 appendix F: the signing input is still `header.payload`; only transport omits it.
    """
    protected = {"alg": material.alg, "kid": material.kid, **header}
    encoded_header = b64url_encode(json.dumps(protected, separators=(",", ":")).encode())
    signature = material.sign(f"{encoded_header}.{b64url_encode(payload)}".encode())
    return encoded_header, b64url_encode(signature)


async def rotate(
    session: AsyncSession,
    ctx: Context,
    keystore: KeyStore,
    settings: Settings,
    algorithm: str | None = None,
    revoke_previous: bool = False,
) -> Rotation:
    """Make a new key active; the previous one retires (published for the longest token
    lifetime plus leeway) or, with `revoke_previous`, is revoked with every retired key.

    Raises SigningKeyRotationConflict when another rotation commits meanwhile (the caller may
    list the keys and retry); audit and outbox events and `keys_revoked` run in `session`.
    """
    alg = parse_algorithm(algorithm or settings.signing_algorithm)
    now = ctx.clock.now()
    new_row = await keyring.new_key_row(alg, keystore, now)
    previous = await keyring.active_row(session)
    publish_until = now + timedelta(seconds=settings.access_token_max_lifetime_seconds)
    publish_until += RETIREMENT_LEEWAY
    if previous is not None:
        await _retire(session, previous.kid, now, publish_until)
    session.add(new_row)
    try:
        await session.flush()
    except IntegrityError:
        raise _conflict() from None
    revoked = await _revoke_all_retired(session, now) if revoke_previous else []
    still_published = previous is not None and not revoke_previous
    rotation = Rotation(
        key=new_row,
        previous_kid=previous.kid if previous else None,
        revoked_kids=revoked,
        previous_publish_until=publish_until if still_published else None,
    )
    await _record_rotation(session, ctx, rotation)
    if revoked:
        await keys_revoked.run(session, ctx, revoked)
    _forget_cached_keys_on_commit(session, keystore)
    return rotation


async def rotation_due(session: AsyncSession, settings: Settings, now: datetime) -> str | None:
    """Why the active key should be rotated now, or None: older than `key_rotation_days` (when
    not 0), or made with another algorithm than `signing_algorithm` (the setting changed)."""
    active = await keyring.active_row(session)
    if active is None:
        return None  # the first key is created on first use, with the configured algorithm
    if parse_algorithm(active.alg).value != settings.signing_algorithm:
        return f"algorithm changed from {active.alg} to {settings.signing_algorithm}"
    max_age = timedelta(days=settings.key_rotation_days)
    if settings.key_rotation_days and now - active.created_at >= max_age:
        return f"key older than {settings.key_rotation_days} days"
    return None


async def erase_spent_private_keys(session: AsyncSession, now: datetime) -> int:
    """Drop the sealed private halves of keys that can never sign nor verify again (revoked, or
    retired past `publish_until`): a leaked backup then holds no old private key. Rows stay."""
    spent = (SigningKey.status == _REVOKED) | (
        (SigningKey.status == _RETIRED) & (SigningKey.publish_until <= now)
    )
    statement = (
        update(SigningKey)
        .where(spent, SigningKey.sealed_private_key != b"")
        .values(sealed_private_key=b"")
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(statement)
    return int(getattr(result, "rowcount", 0))


async def _retire(session: AsyncSession, kid: str, now: datetime, publish_until: datetime) -> None:
    # Guarded by status: if another rotation retired this key first, we must not win as well.
    statement = (
        update(SigningKey)
        .where(SigningKey.kid == kid, SigningKey.status == _ACTIVE)
        .values(status=_RETIRED, retired_at=now, publish_until=publish_until)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(statement)
    if getattr(result, "rowcount", 0) != 1:
        raise _conflict()


async def _revoke_all_retired(session: AsyncSession, now: datetime) -> list[str]:
    statement = select(SigningKey.kid).where(SigningKey.status == _RETIRED).order_by(SigningKey.kid)
    kids = list((await session.execute(statement)).scalars())
    if kids:
        await session.execute(
            update(SigningKey)
            .where(SigningKey.kid.in_(kids))
            .values(status=_REVOKED, revoked_at=now)
            .execution_options(synchronize_session=False)
        )
    return kids


async def _record_rotation(session: AsyncSession, ctx: Context, rotation: Rotation) -> None:
    until = rotation.previous_publish_until
    details: dict[str, Any] = {
        "kid": rotation.key.kid,
        "alg": rotation.key.alg,
        "previous_kid": rotation.previous_kid,
        "previous_publish_until": until.isoformat() if until else None,
        "revoked_kids": rotation.revoked_kids,
    }
    await _changed(session, ctx, "signing_key.rotated", rotation.key.kid, details)
    for kid in rotation.revoked_kids:
        await _changed(session, ctx, "signing_key.revoked", kid, {"kid": kid})


async def _changed(
    session: AsyncSession, ctx: Context, action: str, kid: str, details: dict[str, Any]
) -> None:
    # Signing keys belong to the platform, not to an org: their events go to the platform chain.
    await audit.record(session, ctx, action=action, org_id=None, target=kid, details=details)
    await outbox.emit(session, ctx.clock, type=action, org_id=None, subject=kid, data=details)


def _forget_cached_keys_on_commit(session: AsyncSession, keystore: KeyStore) -> None:
    """This process stops signing with the old key the moment the rotation commits."""
    cached = keyring.cached_keys(keystore)
    if cached is None:
        return

    def forget(_session: Session) -> None:
        cached.invalidate()

    event.listen(session.sync_session, "after_commit", forget, once=True)


def _conflict() -> SigningKeyRotationConflict:
    return SigningKeyRotationConflict(
        "another rotation changed the active signing key at the same time; "
        "list the keys and rotate again if a new key is still needed"
    )
