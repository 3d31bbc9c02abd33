"""The signing keys a process holds in memory, and how they are sealed at rest.

`SigningKeys` keeps the opened active key and the published public keys of one process (one per
`KeyStore`, and each runtime builds its own). Both are re-read from the database at most every
`REFRESH_SECONDS`, so a rotation made by another replica, including an emergency revocation,
reaches this one within that interval; a rotation made here drops the cache when it commits.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

from cryptography.exceptions import InvalidTag
from sqlalchemy import case, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.clock import Clock
from tabard.core.db import Database
from tabard.core.jose import jwk_thumbprint
from tabard.core.keystore import KeyStore
from tabard.core.singleflight import SingleFlight
from tabard.signing.algorithms import (
    SigningAlgorithm,
    SigningMaterial,
    generate_private_key,
    load_private_pem,
    material,
    parse_algorithm,
    private_pem,
    public_jwk,
    published_jwk,
)
from tabard.signing.errors import SigningKeyUnavailable
from tabard.signing.models import SigningKey
from tabard.signing.schemas import SigningKeyStatus

# Long enough that the database sees one read per replica every few seconds, short enough that
# a revoked key stops signing everywhere almost at once.
REFRESH_SECONDS = 5.0
# A token signed by a key we have not read yet (another replica rotated) triggers a re-read,
# but at most this often, so random `kid`s cannot turn verification into database load.
UNKNOWN_KID_REFRESH_SECONDS = 1.0
_SEAL_CONTEXT = b"tabard-signing-key:"


async def new_key_row(alg: SigningAlgorithm, keystore: KeyStore, now: datetime) -> SigningKey:
    """A new active key row: generated off the event loop, private half sealed, kid RFC 7638."""
    private_key = await asyncio.to_thread(generate_private_key, alg)
    jwk = public_jwk(private_key.public_key())
    kid = jwk_thumbprint(jwk)
    return SigningKey(
        kid=kid,
        alg=alg.value,
        status=SigningKeyStatus.ACTIVE.value,
        public_jwk=jwk,
        sealed_private_key=keystore.encrypt(private_pem(private_key), _seal_context(kid)),
        created_at=now,
    )


def open_key(row: SigningKey, keystore: KeyStore) -> SigningMaterial:
    """Decrypt the row's private key; SigningKeyUnavailable when the master key is not its own."""
    try:
        pem = keystore.decrypt(row.sealed_private_key, _seal_context(row.kid))
    except InvalidTag:
        raise SigningKeyUnavailable(
            f"signing key {row.kid} cannot be opened with this master key; restore the master "
            "key (TABARD_MASTER_KEY or master.key) that was in use when it was created"
        ) from None
    return material(row.kid, parse_algorithm(row.alg), load_private_pem(pem))


async def active_row(session: AsyncSession) -> SigningKey | None:
    statement = select(SigningKey).where(SigningKey.status == SigningKeyStatus.ACTIVE.value)
    return (await session.execute(statement)).scalar_one_or_none()


async def published_rows(session: AsyncSession, now: datetime | None) -> Sequence[SigningKey]:
    """Keys that may still verify a live token: not revoked and, given `now`, not past their
    `publish_until`. The active key first, then the newest."""
    statement = select(SigningKey).where(SigningKey.status != SigningKeyStatus.REVOKED.value)
    if now is not None:
        statement = statement.where(
            or_(SigningKey.publish_until.is_(None), SigningKey.publish_until > now)
        )
    active_first = case((SigningKey.status == SigningKeyStatus.ACTIVE.value, 0), else_=1)
    ordered = statement.order_by(active_first, SigningKey.created_at.desc(), SigningKey.kid)
    return (await session.execute(ordered)).scalars().all()


@dataclass(frozen=True, slots=True)
class PublishedKeys:
    """A snapshot of the JWK Set: its keys, an ETag over them, and when it next changes."""

    keys: tuple[dict[str, Any], ...]
    by_kid: dict[str, dict[str, Any]]
    etag: str
    read_at: float
    # The earliest `publish_until` among the keys (unix time): one of them leaves the set then.
    next_expiry: float | None

    def key_set(self) -> dict[str, Any]:
        return {"keys": list(self.keys)}

    def valid_at(self, now: float) -> bool:
        """Whether the snapshot still holds at `now` (no key's window has closed since)."""
        return self.next_expiry is None or now < self.next_expiry

    def seconds_until_expiry(self, now: float) -> float | None:
        return None if self.next_expiry is None else max(0.0, self.next_expiry - now)


def published_keys(rows: Sequence[SigningKey], read_at: float) -> PublishedKeys:
    keys = tuple(published_jwk(row.kid, row.alg, row.public_jwk) for row in rows)
    canonical = json.dumps(keys, sort_keys=True, separators=(",", ":")).encode()
    digest = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()[:16]).rstrip(b"=")
    expiries = [row.publish_until.timestamp() for row in rows if row.publish_until is not None]
    return PublishedKeys(
        keys=keys,
        by_kid={key["kid"]: key for key in keys},
        etag=f'"{digest.decode()}"',
        read_at=read_at,
        next_expiry=min(expiries, default=None),
    )


@dataclass(frozen=True, slots=True)
class _Active:
    material: SigningMaterial
    read_at: float


class SigningKeys:
    """One process's signing keys: the opened active key and the published set, both cached."""

    def __init__(
        self, keystore: KeyStore, clock: Clock, refresh_seconds: float = REFRESH_SECONDS
    ) -> None:
        self._keystore = keystore
        self._clock = clock
        self._refresh_seconds = refresh_seconds
        self._active: _Active | None = None
        self._published: PublishedKeys | None = None
        self._key_exists = False
        # Bumped by `invalidate`: a read that started before it must not install stale keys.
        self._generation = 0
        # When a cached snapshot lapses under load, one read refreshes it for every caller.
        self._active_reads: SingleFlight[str, SigningMaterial] = SingleFlight()
        self._published_reads: SingleFlight[str, PublishedKeys] = SingleFlight()

    async def active(self, database: Database, algorithm: str | None = None) -> SigningMaterial:
        """The active key, opened; creates the first key (`algorithm`, default ES256) if none."""
        now = self._clock.timestamp()
        cached = self._active
        if cached is not None and self._fresh(cached.read_at, now):
            return cached.material
        return await self._active_reads.run(
            algorithm or "", lambda: self._read_active(database, algorithm, cached, now)
        )

    async def _read_active(
        self, database: Database, algorithm: str | None, cached: _Active | None, now: float
    ) -> SigningMaterial:
        generation = self._generation
        async with database.read_only() as session:
            row = await active_row(session)
        if row is None:
            row = await self._create_first_key(database, algorithm)
        if cached is not None and cached.material.kid == row.kid:
            opened = cached.material  # unchanged: no need to decrypt again
        else:
            opened = open_key(row, self._keystore)
        if generation == self._generation:
            self._active = _Active(opened, now)
        self._key_exists = True
        return opened

    async def ensure(self, database: Database, algorithm: str | None = None) -> None:
        """Make sure an active key exists, without decrypting anything (serving the JWKS)."""
        if self._key_exists:
            return
        async with database.read_only() as session:
            row = await active_row(session)
        if row is None:
            await self._create_first_key(database, algorithm)
        self._key_exists = True  # keys are never deleted and rotation always leaves one active

    async def published(self, session: AsyncSession) -> PublishedKeys:
        """The JWK Set snapshot: re-read every few seconds and whenever a key's window closes."""
        now = self._clock.timestamp()
        cached = self._published
        if cached is not None and self._fresh(cached.read_at, now) and cached.valid_at(now):
            return cached
        return await self._read_published(session, now)

    async def verification_snapshot(
        self, database: Database, kid: str | None = None
    ) -> PublishedKeys:
        """The keys that may verify a live token (published, not revoked), from memory while
        fresh; read again at once for a `kid` it lacks, at most once a second (a rotation on
        another replica, not a flood of forged kids, is what makes a kid unknown)."""
        now = self._clock.timestamp()
        cached = self._published
        if cached is not None and self._fresh(cached.read_at, now) and cached.valid_at(now):
            just_read = 0 <= now - cached.read_at < UNKNOWN_KID_REFRESH_SECONDS
            if kid is None or kid in cached.by_kid or just_read:
                return cached
        return await self._published_reads.run("published", lambda: self._read_from(database, now))

    async def _read_from(self, database: Database, now: float) -> PublishedKeys:
        async with database.read_only() as session:
            return await self._read_published(session, now)

    async def verification_keys(self, database: Database) -> dict[str, dict[str, Any]]:
        """kid → public JWK of every key that may verify a live token."""
        return dict((await self.verification_snapshot(database)).by_kid)

    async def verification_key(self, database: Database, kid: str) -> dict[str, Any] | None:
        """The public JWK for `kid`, re-reading once (rate-limited) when `kid` is unknown."""
        return (await self.verification_snapshot(database, kid)).by_kid.get(kid)

    def invalidate(self) -> None:
        """Forget everything read so far: the next call reads the database again."""
        self._generation += 1
        self._active = None
        self._published = None

    def _fresh(self, read_at: float, now: float) -> bool:
        # A clock that steps backwards counts as stale rather than as fresh forever.
        return 0 <= now - read_at < self._refresh_seconds

    async def _read_published(self, session: AsyncSession, now: float) -> PublishedKeys:
        generation = self._generation
        rows = await published_rows(session, self._clock.now())
        snapshot = published_keys(rows, now)
        if generation == self._generation:
            self._published = snapshot
        return snapshot

    async def _create_first_key(self, database: Database, algorithm: str | None) -> SigningKey:
        alg = parse_algorithm(algorithm) if algorithm else SigningAlgorithm.ES256
        row = await new_key_row(alg, self._keystore, self._clock.now())
        async with database.unit_of_work() as session:
            return await _insert_first_key(session, row)


async def _insert_first_key(session: AsyncSession, row: SigningKey) -> SigningKey:
    """Insert `row` unless another replica created the first key meanwhile (then use theirs)."""
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        existing = await active_row(session)  # the unique index on the active key settled it
        if existing is None:
            raise
        return existing
    return row


_BY_KEYSTORE: WeakKeyDictionary[KeyStore, SigningKeys] = WeakKeyDictionary()


def keys_for(keystore: KeyStore, clock: Clock) -> SigningKeys:
    """The `SigningKeys` of the runtime that owns `keystore` (created on first use)."""
    keys = _BY_KEYSTORE.get(keystore)
    if keys is None:
        keys = _BY_KEYSTORE[keystore] = SigningKeys(keystore, clock)
    return keys


def cached_keys(keystore: KeyStore) -> SigningKeys | None:
    """The `SigningKeys` of `keystore` if it exists yet (to invalidate after a rotation)."""
    return _BY_KEYSTORE.get(keystore)


def _seal_context(kid: str) -> bytes:
    # Binding the ciphertext to its kid stops a sealed key from being swapped onto another row.
    return _SEAL_CONTEXT + kid.encode()
