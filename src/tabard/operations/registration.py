"""Registration tokens: how an agent process enrolls itself without an operator at hand.

An org key (or the admin) creates a single-use token (`tbd_reg_…`, 60 s to 7 days, stored as a
keyed digest, shown once) with an optional preset. The process presents it once: Tabard creates
the agent (or, with a preset `agent_id`, attaches to it) and returns its credentials, a client
secret or a certificate signed from the process's CSR. A used, expired or revoked token is 401
`REGISTRATION_TOKEN_INVALID` and nothing is created; of concurrent uses exactly one succeeds.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit import service as audit
from tabard.core import outbox
from tabard.core.config import Settings
from tabard.core.context import Actor, ActorKind, Context
from tabard.core.errors import InvalidField
from tabard.core.hashing import keyed_digest
from tabard.core.ids import REGISTRATION_TOKEN_PREFIX, new_id, new_secret
from tabard.core.keystore import KeyStore
from tabard.credentials import service as credentials
from tabard.credentials.schemas import CredentialCreate
from tabard.operations.errors import (
    RegistrationTokenInvalid,
    RegistrationTokenNotFound,
    RegistrationTokenStateConflict,
)
from tabard.operations.models import RegistrationToken
from tabard.operations.schemas import (
    Registered,
    Registration,
    RegistrationPreset,
    RegistrationTokenCreate,
    RegistrationTokenStatus,
)
from tabard.pki import certificates
from tabard.pki.schemas import CertificateRequest
from tabard.registry import service as registry
from tabard.registry.schemas import AgentCreate
from tabard.tenancy import service as tenancy

DISPLAY_PREFIX_LENGTH = 12
CREDENTIAL_NAME = "registration"


def token_status(token: RegistrationToken, now: datetime) -> RegistrationTokenStatus:
    if token.revoked_at is not None:
        return RegistrationTokenStatus.REVOKED
    if token.used_at is not None:
        return RegistrationTokenStatus.USED
    if token.expires_at <= now:
        return RegistrationTokenStatus.EXPIRED
    return RegistrationTokenStatus.ACTIVE


async def create_token(
    session: AsyncSession,
    ctx: Context,
    secret_key: bytes,
    org_id: str,
    data: RegistrationTokenCreate,
) -> tuple[RegistrationToken, str]:
    """A new token and its secret (returned once; only a keyed digest is stored)."""
    tenancy.require_active(org_id, (await tenancy.get_org(session, org_id)).status)
    if data.preset.agent_id is not None:
        await registry.get_mutable_agent(session, org_id, data.preset.agent_id)
    secret = new_secret(REGISTRATION_TOKEN_PREFIX)
    now = ctx.clock.now()
    token = RegistrationToken(
        id=new_id(),
        org_id=org_id,
        label=data.label,
        prefix=secret[:DISPLAY_PREFIX_LENGTH],
        digest=keyed_digest(secret_key, secret),
        preset=data.preset.model_dump(exclude_none=True),
        created_at=now,
        expires_at=now + timedelta(seconds=data.expires_in),
    )
    session.add(token)
    await _changed(session, ctx, "registration_token.created", token)
    return token, secret


async def list_tokens(session: AsyncSession, org_id: str) -> list[RegistrationToken]:
    await tenancy.get_org(session, org_id)
    statement = (
        select(RegistrationToken)
        .where(RegistrationToken.org_id == org_id)
        .order_by(RegistrationToken.id.desc())
    )
    return list((await session.execute(statement)).scalars())


async def get_token(session: AsyncSession, org_id: str, token_id: str) -> RegistrationToken:
    statement = select(RegistrationToken).where(
        RegistrationToken.id == token_id, RegistrationToken.org_id == org_id
    )
    token = (await session.execute(statement)).scalar_one_or_none()
    if token is None:
        raise RegistrationTokenNotFound(f"no registration token {token_id!r}")
    return token


async def revoke_token(
    session: AsyncSession, ctx: Context, org_id: str, token_id: str
) -> RegistrationToken:
    token = await get_token(session, org_id, token_id)
    status = token_status(token, ctx.clock.now())
    if status in (RegistrationTokenStatus.USED, RegistrationTokenStatus.REVOKED):
        raise RegistrationTokenStateConflict(f"registration token {token_id!r} is {status.value}")
    token.revoked_at = ctx.clock.now()
    await _changed(session, ctx, "registration_token.revoked", token)
    return token


async def register(
    session: AsyncSession,
    ctx: Context,
    settings: Settings,
    keystore: KeyStore,
    secret_key: bytes,
    presented: str,
    data: Registration,
) -> Registered:
    """Use the token once: the agent and its credential, in the caller's transaction."""
    token = await _use(session, ctx, secret_key, presented)
    ctx = Context(
        Actor(ActorKind.REGISTRATION_TOKEN, token.id, token.org_id),
        ctx.clock,
        ctx.request_id,
        ctx.kv,
    )
    tenancy.require_active(token.org_id, (await tenancy.get_org(session, token.org_id)).status)
    preset = RegistrationPreset.model_validate(token.preset)
    agent = await _agent(session, ctx, settings, token.org_id, preset, data)
    token.used_by_agent_id = agent.id
    registered = await _credential(session, ctx, settings, keystore, secret_key, agent, data)
    await _changed(session, ctx, "registration_token.used", token, agent_id=agent.id)
    return registered


async def _use(
    session: AsyncSession, ctx: Context, secret_key: bytes, presented: str
) -> RegistrationToken:
    """Consume the token atomically; any reason it cannot be used is the same 401."""
    now = ctx.clock.now()
    statement = select(RegistrationToken).where(
        RegistrationToken.digest == keyed_digest(secret_key, presented)
    )
    token = (await session.execute(statement)).scalar_one_or_none()
    if token is None:
        raise RegistrationTokenInvalid("the registration token is not known")
    consumed = await session.execute(
        update(RegistrationToken)
        .where(
            RegistrationToken.id == token.id,
            RegistrationToken.used_at.is_(None),
            RegistrationToken.revoked_at.is_(None),
            RegistrationToken.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if getattr(consumed, "rowcount", 0) != 1:
        # Read again: a concurrent use may have committed since the select above.
        await session.refresh(token)
        status = token_status(token, now).value
        raise RegistrationTokenInvalid(f"the registration token is {status}", org_id=token.org_id)
    await session.refresh(token)
    return token


async def _agent(
    session: AsyncSession,
    ctx: Context,
    settings: Settings,
    org_id: str,
    preset: RegistrationPreset,
    data: Registration,
) -> Any:
    if preset.agent_id is not None:
        chosen = sorted(data.model_fields_set & {"name", "capabilities", "tags"})
        if chosen:
            raise InvalidField(
                f"body.{chosen[0]}", "this token attaches to an existing agent: it cannot be chosen"
            )
        return await registry.get_mutable_agent(session, org_id, preset.agent_id)
    try:
        create = AgentCreate(
            name=_name(preset.name_pattern, data.name),
            display_name=data.display_name,
            description=data.description,
            version=data.version,
            capabilities=_capabilities(preset.capabilities, data.capabilities),
            tags=list(dict.fromkeys([*data.tags, *(preset.tags or [])])),
        )
    except ValidationError as exc:
        # Request and preset are each valid, yet together may not make an agent (more tags than
        # an agent may hold, a pattern-made name that is no agent name): the client's 422.
        error = exc.errors()[0]
        raise InvalidField(f"body.{error['loc'][0]}", error["msg"]) from None
    return await registry.create_agent(session, ctx, settings, org_id, create)


def _name(pattern: str | None, requested: str | None) -> str:
    """The requested name if the preset's pattern allows it; else one the pattern makes."""
    if pattern is None:
        if requested is None:
            raise InvalidField("body.name", "a name is required (the token has no name preset)")
        return requested
    if requested is not None:
        allowed = re.fullmatch(re.escape(pattern).replace(r"\*", "[a-z0-9-]*"), requested)
        if allowed is None:
            raise InvalidField("body.name", f"must match the token's pattern {pattern!r}")
        return requested
    return pattern.replace("*", secrets.token_hex(4))


def _capabilities(preset: list[str] | None, requested: list[str] | None) -> list[str]:
    if preset is None:
        return requested or []
    if requested is None:
        return preset
    beyond = [item for item in requested if item not in set(preset)]
    if beyond:
        raise InvalidField("body.capabilities", f"beyond the token's preset: {' '.join(beyond)}")
    return requested


async def _credential(
    session: AsyncSession,
    ctx: Context,
    settings: Settings,
    keystore: KeyStore,
    secret_key: bytes,
    agent: Any,
    data: Registration,
) -> Registered:
    issuer = settings.public_url
    common = {
        "agent_id": agent.id,
        "org_id": agent.org_id,
        "agent_name": agent.name,
        "issuer": issuer,
        "token_endpoint": f"{issuer}/oauth2/token",
    }
    if data.credential == "certificate":
        if data.csr_pem is None:
            raise InvalidField("body.csr_pem", "a certificate credential needs the process's CSR")
        # The enrolling process is the certificate's first holder: pinned at once.
        request = CertificateRequest(csr_pem=data.csr_pem, pin=True)
        stored = await certificates.submit_certificate(
            session, ctx, settings, keystore, agent.org_id, agent.id, request
        )
        return Registered(
            **common,
            client_id=stored.row.spiffe_id,
            certificate_pem=stored.row.certificate_pem,
            chain_pem=stored.chain_pem,
            spiffe_id=stored.row.spiffe_id,
        )
    credential, secret = await credentials.create_credential(
        session,
        ctx,
        settings,
        secret_key,
        agent.org_id,
        agent.id,
        CredentialCreate(name=CREDENTIAL_NAME),
    )
    return Registered(**common, client_id=credential.client_id, client_secret=secret)


async def _changed(
    session: AsyncSession, ctx: Context, action: str, token: RegistrationToken, **data: Any
) -> None:
    details = {"registration_token_id": token.id, "label": token.label, **data}
    await audit.record(
        session, ctx, action=action, org_id=token.org_id, target=token.id, details=details
    )
    await outbox.emit(
        session, ctx.clock, type=action, org_id=token.org_id, subject=token.id, data=details
    )
