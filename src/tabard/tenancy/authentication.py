"""Who is calling: org API keys (keyed digest lookup) and the platform admin secret (argon2id)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit import service as audit
from tabard.core.clock import Clock
from tabard.core.context import SYSTEM, Actor, ActorKind, Context
from tabard.core.hashing import argon2_hash, argon2_verify, keyed_digest
from tabard.core.ids import ADMIN_SECRET_PREFIX, ORG_KEY_PREFIX, new_secret
from tabard.tenancy.errors import AdminSecretNotRotated, InvalidCredentials
from tabard.tenancy.models import Organization, OrgApiKey, PlatformAdmin
from tabard.tenancy.service import require_active

# last_used_at is advisory: writing it on every call would turn each read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
ADMIN_CACHE_SECONDS = 60.0
PLATFORM_ADMIN_ROW = 1


async def authenticate_org_key(
    session: AsyncSession, secret_key: bytes, token: str, clock: Clock
) -> tuple[Actor, bool]:
    """The org key's actor, and whether its last-used time is stale enough to record.

    Raises `InvalidCredentials` if the key is unknown, revoked or expired, `OrgSuspended` or
    `OrgNotActive` if its organization is suspended, pending or rejected.
    """
    statement = (
        select(OrgApiKey, Organization.status)
        .join(Organization, Organization.id == OrgApiKey.org_id)
        .where(OrgApiKey.digest == keyed_digest(secret_key, token))
    )
    row = (await session.execute(statement)).one_or_none()
    now = clock.now()
    if row is None or not _usable(row[0], now):
        raise InvalidCredentials("the API key is unknown, revoked or expired")
    key, org_status = row
    require_active(key.org_id, org_status)
    stale = key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION
    return Actor(ActorKind.ORG_KEY, key.id, key.org_id), stale


async def authenticate_api_secret(
    session: AsyncSession, admin: AdminAuthenticator, secret_key: bytes, token: str, clock: Clock
) -> tuple[Actor, bool]:
    """An org API key's or the platform admin's actor, and whether an org key's last-used time
    is stale enough to record. Raises `InvalidCredentials`, `OrgSuspended` or `OrgNotActive`."""
    if looks_like_org_key(token):
        return await authenticate_org_key(session, secret_key, token, clock)
    return await admin.authenticate(session, token), False


async def record_key_use(session: AsyncSession, key_id: str, clock: Clock) -> None:
    await session.execute(
        update(OrgApiKey).where(OrgApiKey.id == key_id).values(last_used_at=clock.now())
    )


def _usable(key: OrgApiKey, now: datetime) -> bool:
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


class AdminAuthenticator:
    """Verifies the platform admin secret; remembers recent successes to spare argon2 per call.

    The cache holds keyed digests, never secrets, and only for a minute.
    """

    def __init__(self, secret_key: bytes, clock: Clock) -> None:
        self._secret_key = secret_key
        self._clock = clock
        self._verified: dict[str, float] = {}

    async def authenticate(self, session: AsyncSession, token: str) -> Actor:
        digest = keyed_digest(self._secret_key, token)
        now = self._clock.timestamp()
        if self._verified.get(digest, 0.0) > now:
            return Actor(ActorKind.PLATFORM_ADMIN, "admin")
        admin = await session.get(PlatformAdmin, PLATFORM_ADMIN_ROW)
        if admin is None or not await argon2_verify(admin.secret_hash, token):
            raise InvalidCredentials("invalid credentials")
        self._verified = {d: t for d, t in self._verified.items() if t > now}
        self._verified[digest] = now + ADMIN_CACHE_SECONDS
        return Actor(ActorKind.PLATFORM_ADMIN, "admin")


async def ensure_admin_secret(
    session: AsyncSession, configured: str | None, clock: Clock, *, production: bool = False
) -> str | None:
    """Make the stored admin credential match the configuration.

    With `configured` set, store its hash (if it changed); in production the generated first-boot
    secret is refused (`AdminSecretNotRotated`). Without it, generate a secret on first boot and
    return it so it can be printed once; later boots return None.
    """
    admin = await session.get(PlatformAdmin, PLATFORM_ADMIN_ROW)
    if configured is not None:
        matches = admin is not None and await argon2_verify(admin.secret_hash, configured)
        if production and matches and admin is not None and admin.generated:
            raise AdminSecretNotRotated("TABARD_ADMIN_SECRET is still the first-boot secret")
        if not matches or (admin is not None and admin.generated):
            await _store(session, admin, argon2_hash(configured), generated=False, clock=clock)
        return None
    if admin is not None:
        return None
    secret = new_secret(ADMIN_SECRET_PREFIX)
    await _store(session, None, argon2_hash(secret), generated=True, clock=clock)
    return secret


async def _store(
    session: AsyncSession,
    admin: PlatformAdmin | None,
    encoded: str,
    *,
    generated: bool,
    clock: Clock,
) -> None:
    if admin is None:
        admin = PlatformAdmin(id=PLATFORM_ADMIN_ROW)
        session.add(admin)
    admin.secret_hash = encoded
    admin.generated = generated
    admin.updated_at = clock.now()
    await audit.record(
        session,
        Context(SYSTEM, clock),
        action="platform.admin_secret.set",
        org_id=None,
        details={"generated": generated},
    )


def looks_like_org_key(token: str) -> bool:
    return token.startswith(ORG_KEY_PREFIX)
