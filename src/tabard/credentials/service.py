"""Client credentials of agents: create, list, rotate (with an optional grace period), revoke,
and verify a presented secret.

Secrets are 256-bit random tokens with the `tbd_cs_` prefix, stored as a keyed HMAC-SHA256 and
shown once. Functions take the caller's session and never commit; each change writes its audit
and outbox events in that session.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit import service as audit
from tabard.core import outbox
from tabard.core.clock import Clock
from tabard.core.config import Settings
from tabard.core.context import Context
from tabard.core.errors import InvalidField
from tabard.core.hashing import keyed_digest
from tabard.core.hooks import Hook
from tabard.core.ids import CLIENT_SECRET_PREFIX, new_client_id, new_id, new_secret
from tabard.credentials.errors import (
    ClientAuthenticationFailed,
    CredentialMethodMismatch,
    CredentialNotFound,
    CredentialRevoked,
)
from tabard.credentials.jwks import validated_jwks, validated_jwks_uri
from tabard.credentials.models import ClientCredential
from tabard.credentials.schemas import (
    AuthMethod,
    CredentialCreate,
    CredentialStatus,
    CredentialUpdate,
    JsonWebKeySet,
)
from tabard.registry import service as registry
from tabard.registry.schemas import AgentStatus


@dataclass(frozen=True, slots=True)
class CredentialRef:
    """What other domains learn about a credential that stops working."""

    client_id: str
    org_id: str


# The token service kills the tokens issued to a revoked credential here, in the same transaction.
credential_revoked: Hook[CredentialRef] = Hook("credentials.credential_revoked")
# Whoever caches authentications by secret forgets them here when the secret changes.
secret_rotated: Hook[CredentialRef] = Hook("credentials.secret_rotated")

SECRET_DISPLAY_PREFIX_LENGTH = 12
EXPIRING_SOON = timedelta(days=7)
_ACTIVE = CredentialStatus.ACTIVE.value


async def _changed(
    session: AsyncSession, ctx: Context, action: str, credential: ClientCredential, **data: Any
) -> None:
    details = {"agent_id": credential.agent_id, "client_id": credential.client_id, **data}
    org_id = credential.org_id
    await audit.record(
        session, ctx, action=action, org_id=org_id, target=credential.id, details=details
    )
    await outbox.emit(
        session, ctx.clock, type=action, org_id=org_id, subject=credential.id, data=details
    )


async def create_credential(
    session: AsyncSession,
    ctx: Context,
    settings: Settings,
    secret_key: bytes,
    org_id: str,
    agent_id: str,
    data: CredentialCreate,
) -> tuple[ClientCredential, str | None]:
    """A new credential and, for the secret method, its secret (returned once)."""
    agent = await registry.get_mutable_agent(session, org_id, agent_id)
    now = ctx.clock.now()
    credential = ClientCredential(
        id=new_id(),
        org_id=org_id,
        agent_id=agent.id,
        client_id=new_client_id(),
        name=data.name,
        auth_method=data.auth_method.value,
        status=_ACTIVE,
        expires_at=now + timedelta(seconds=data.expires_in) if data.expires_in else None,
        scope=_allowed_scope(data.scope, agent.capabilities),
        created_at=now,
    )
    secret = None
    if data.auth_method is AuthMethod.CLIENT_SECRET:
        if data.jwks is not None or data.jwks_uri is not None:
            raise InvalidField("body.auth_method", "jwks/jwks_uri need auth_method private_key_jwt")
        secret = _set_new_secret(credential, secret_key)
    else:
        _set_keys(credential, data.jwks, data.jwks_uri, settings)
    session.add(credential)
    await _changed(
        session, ctx, "credential.created", credential, auth_method=credential.auth_method
    )
    return credential, secret


async def list_credentials(
    session: AsyncSession, org_id: str, agent_id: str
) -> list[ClientCredential]:
    await registry.get_agent(session, org_id, agent_id)
    statement = (
        select(ClientCredential)
        .where(ClientCredential.org_id == org_id, ClientCredential.agent_id == agent_id)
        .order_by(ClientCredential.id)
    )
    return list((await session.execute(statement)).scalars())


async def get_credential(
    session: AsyncSession, org_id: str, agent_id: str, credential_id: str
) -> ClientCredential:
    statement = select(ClientCredential).where(
        ClientCredential.id == credential_id,
        ClientCredential.org_id == org_id,
        ClientCredential.agent_id == agent_id,
    )
    credential = (await session.execute(statement)).scalar_one_or_none()
    if credential is None:
        raise CredentialNotFound(f"no credential {credential_id!r}")
    return credential


async def update_credential(
    session: AsyncSession,
    ctx: Context,
    settings: Settings,
    org_id: str,
    agent_id: str,
    credential_id: str,
    data: CredentialUpdate,
) -> ClientCredential:
    credential = await _active_credential(session, org_id, agent_id, credential_id)
    if data.jwks is not None or data.jwks_uri is not None:
        if credential.auth_method != AuthMethod.PRIVATE_KEY_JWT.value:
            raise CredentialMethodMismatch("only private_key_jwt credentials have keys to replace")
        _set_keys(credential, data.jwks, data.jwks_uri, settings)
    if data.name is not None:
        credential.name = data.name
    if "scope" in data.model_fields_set:
        agent = await registry.get_agent(session, org_id, agent_id)
        credential.scope = _allowed_scope(data.scope, agent.capabilities)
    await _changed(
        session, ctx, "credential.updated", credential, fields=sorted(data.model_fields_set)
    )
    return credential


async def rotate_secret(
    session: AsyncSession,
    ctx: Context,
    secret_key: bytes,
    org_id: str,
    agent_id: str,
    credential_id: str,
    grace_period_seconds: int,
) -> tuple[ClientCredential, str]:
    """A new secret; the old one stops at once, or after the grace period (≤ 24 h)."""
    credential = await _active_credential(session, org_id, agent_id, credential_id)
    if credential.auth_method != AuthMethod.CLIENT_SECRET.value:
        raise CredentialMethodMismatch("only client_secret credentials have a secret to rotate")
    now = ctx.clock.now()
    if grace_period_seconds:
        credential.previous_secret_digest = credential.secret_digest
        credential.previous_secret_expires_at = now + timedelta(seconds=grace_period_seconds)
    else:
        credential.previous_secret_digest = None
        credential.previous_secret_expires_at = None
    secret = _set_new_secret(credential, secret_key)
    credential.rotated_at = now
    await _changed(
        session, ctx, "credential.rotated", credential, grace_period_seconds=grace_period_seconds
    )
    await secret_rotated.run(session, ctx, CredentialRef(credential.client_id, org_id))
    return credential, secret


async def revoke_credential(
    session: AsyncSession, ctx: Context, org_id: str, agent_id: str, credential_id: str
) -> ClientCredential:
    credential = await _active_credential(session, org_id, agent_id, credential_id)
    _revoke(credential, ctx.clock.now())
    await _changed(session, ctx, "credential.revoked", credential, reason="revoked")
    await credential_revoked.run(session, ctx, CredentialRef(credential.client_id, org_id))
    return credential


async def revoke_all_for_agent(
    session: AsyncSession, ctx: Context, agent: registry.AgentRef
) -> None:
    """`registry.agent_retired` handler: a decommissioned agent keeps no working credential."""
    statement = select(ClientCredential).where(
        ClientCredential.org_id == agent.org_id,
        ClientCredential.agent_id == agent.id,
        ClientCredential.status == _ACTIVE,
    )
    for credential in (await session.execute(statement)).scalars():
        _revoke(credential, ctx.clock.now())
        await _changed(
            session, ctx, "credential.revoked", credential, reason="agent_decommissioned"
        )
        await credential_revoked.run(
            session, ctx, CredentialRef(credential.client_id, credential.org_id)
        )


async def authenticate_secret(
    session: AsyncSession, secret_key: bytes, client_id: str, secret: str, clock: Clock
) -> ClientCredential:
    """The credential `client_id` if `secret` is its current (or in-grace previous) secret and
    the credential and its agent are usable; else `ClientAuthenticationFailed` with the reason."""
    credential = await find_by_client_id(session, client_id)
    if credential is None or credential.auth_method != AuthMethod.CLIENT_SECRET.value:
        raise ClientAuthenticationFailed("unknown_client")
    now = clock.now()
    if not _secret_matches(credential, keyed_digest(secret_key, secret), now):
        raise ClientAuthenticationFailed("secret_mismatch", credential.org_id)
    await _check_usable(session, credential, now)
    return credential


async def authenticate_key_holder(
    session: AsyncSession, client_id: str, clock: Clock
) -> ClientCredential:
    """The usable `private_key_jwt` credential `client_id`, whose keys must then verify the
    client's assertion; else `ClientAuthenticationFailed` with the reason."""
    credential = await find_by_client_id(session, client_id)
    if credential is None or credential.auth_method != AuthMethod.PRIVATE_KEY_JWT.value:
        raise ClientAuthenticationFailed("unknown_client")
    await _check_usable(session, credential, clock.now())
    return credential


async def find_by_client_id(session: AsyncSession, client_id: str) -> ClientCredential | None:
    statement = select(ClientCredential).where(ClientCredential.client_id == client_id)
    return (await session.execute(statement)).scalar_one_or_none()


async def record_use(session: AsyncSession, credential_id: str, clock: Clock) -> None:
    credential = await session.get(ClientCredential, credential_id)
    if credential is not None:
        credential.last_used_at = clock.now()


async def count_expiring_soon(session: AsyncSession, now: datetime) -> int:
    """Active credentials whose expiry falls within the next 7 days."""
    statement = select(func.count()).where(
        ClientCredential.status == _ACTIVE,
        ClientCredential.expires_at > now,
        ClientCredential.expires_at <= now + EXPIRING_SOON,
    )
    return int((await session.execute(statement)).scalar_one())


async def _active_credential(
    session: AsyncSession, org_id: str, agent_id: str, credential_id: str
) -> ClientCredential:
    await registry.get_mutable_agent(session, org_id, agent_id)
    credential = await get_credential(session, org_id, agent_id, credential_id)
    if credential.status != _ACTIVE:
        raise CredentialRevoked(f"credential {credential_id!r} is revoked")
    return credential


async def _check_usable(session: AsyncSession, credential: ClientCredential, now: datetime) -> None:
    org_id = credential.org_id
    if credential.status != _ACTIVE:
        raise ClientAuthenticationFailed("credential_revoked", org_id)
    if credential.expires_at is not None and credential.expires_at <= now:
        raise ClientAuthenticationFailed("credential_expired", org_id)
    agent = await registry.get_agent(session, credential.org_id, credential.agent_id)
    if agent.status != AgentStatus.ACTIVE.value:
        raise ClientAuthenticationFailed(f"agent_{agent.status}", org_id)


def _allowed_scope(scope: list[str] | None, capabilities: list[str]) -> list[str] | None:
    if scope is None:
        return None
    beyond = [item for item in scope if item not in set(capabilities)]
    if beyond:
        raise InvalidField("body.scope", f"outside the agent's capabilities: {' '.join(beyond)}")
    return list(dict.fromkeys(scope))


def _secret_matches(credential: ClientCredential, digest: str, now: datetime) -> bool:
    current = credential.secret_digest or ""
    if hmac.compare_digest(current, digest):
        return True
    previous = credential.previous_secret_digest
    in_grace = (
        credential.previous_secret_expires_at is not None
        and now < credential.previous_secret_expires_at
    )
    return bool(previous and in_grace and hmac.compare_digest(previous, digest))


def _set_new_secret(credential: ClientCredential, secret_key: bytes) -> str:
    secret = new_secret(CLIENT_SECRET_PREFIX)
    credential.secret_digest = keyed_digest(secret_key, secret)
    credential.secret_prefix = secret[:SECRET_DISPLAY_PREFIX_LENGTH]
    return secret


def _set_keys(
    credential: ClientCredential, jwks: JsonWebKeySet | None, jwks_uri: Any, settings: Settings
) -> None:
    if (jwks is None) == (jwks_uri is None):
        raise InvalidField("body", "private_key_jwt needs exactly one of `jwks` or `jwks_uri`")
    if jwks is not None:
        credential.jwks, credential.jwks_uri = validated_jwks(jwks.keys), None
    else:
        credential.jwks = None
        credential.jwks_uri = validated_jwks_uri(str(jwks_uri), production=settings.is_production)


def _revoke(credential: ClientCredential, now: datetime) -> None:
    credential.status = CredentialStatus.REVOKED.value
    credential.revoked_at = now
    credential.previous_secret_digest = None
    credential.previous_secret_expires_at = None
