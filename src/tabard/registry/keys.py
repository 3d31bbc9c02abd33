"""Public keys agents hold: registered as JWKs (RFC 7517) or generated here and handed over once.

Ed25519 (OKP, RFC 8037) and P-256 (EC) only. A key is known by its RFC 7638 thumbprint and,
equivalently, by its did:key. Private material is refused on input and never stored: a generated
private key exists only in the response that hands it over.
"""

from __future__ import annotations

from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, import_key
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.context import Context
from tabard.registry import service
from tabard.registry.did_key import InvalidDidKey, did_key_from_jwk
from tabard.registry.errors import InvalidKey, KeyAlreadyRegistered, KeyNotFound
from tabard.registry.models import AgentKey
from tabard.registry.schemas import AgentKeyCreate, KeyAlgorithm

_PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}
_PUBLIC_MEMBERS = {"kty", "crv", "x", "y"}


async def add_key(
    session: AsyncSession, ctx: Context, org_id: str, agent_id: str, data: AgentKeyCreate
) -> tuple[AgentKey, dict[str, Any] | None]:
    """Register the given public key, or generate a pair; returns the row and, if generated,
    the private JWK (to be shown once)."""
    agent = await service.get_mutable_agent(session, org_id, agent_id)
    public_jwk, private_jwk = _key_material(data)
    row = AgentKey(
        agent_id=agent.id,
        org_id=org_id,
        kid=_thumbprint(public_jwk),
        algorithm=_algorithm(public_jwk),
        public_jwk=public_jwk,
        did_key=_did_key(public_jwk),
        created_at=ctx.clock.now(),
    )
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        raise KeyAlreadyRegistered(f"key {row.kid} is already registered") from None
    details = {"kid": row.kid, "generated": private_jwk is not None}
    await service.record_change(session, ctx, "agent.key.added", agent, details)
    return row, private_jwk


async def list_keys(session: AsyncSession, org_id: str, agent_id: str) -> list[AgentKey]:
    await service.get_agent(session, org_id, agent_id)
    statement = select(AgentKey).where(AgentKey.agent_id == agent_id).order_by(AgentKey.created_at)
    return list((await session.execute(statement)).scalars())


async def active_keys(session: AsyncSession, agent_id: str) -> list[AgentKey]:
    statement = (
        select(AgentKey)
        .where(AgentKey.agent_id == agent_id, AgentKey.revoked_at.is_(None))
        .order_by(AgentKey.created_at)
    )
    return list((await session.execute(statement)).scalars())


async def find_by_did_key(session: AsyncSession, did_key: str) -> AgentKey | None:
    statement = select(AgentKey).where(AgentKey.did_key == did_key)
    return (await session.execute(statement)).scalar_one_or_none()


async def revoke_key(
    session: AsyncSession, ctx: Context, org_id: str, agent_id: str, kid: str
) -> AgentKey:
    agent = await service.get_mutable_agent(session, org_id, agent_id)
    statement = select(AgentKey).where(AgentKey.agent_id == agent.id, AgentKey.kid == kid)
    key = (await session.execute(statement)).scalar_one_or_none()
    if key is None or key.revoked_at is not None:
        raise KeyNotFound(f"no active key {kid!r}")
    key.revoked_at = ctx.clock.now()
    await service.record_change(session, ctx, "agent.key.revoked", agent, {"kid": kid})
    return key


def _key_material(data: AgentKeyCreate) -> tuple[dict[str, Any], dict[str, Any] | None]:
    if (data.jwk is None) == (data.generate is None):
        raise InvalidKey("body", "send exactly one of `jwk` (a public key) or `generate`")
    if data.generate is not None:
        return _generate(data.generate)
    assert data.jwk is not None
    return _validated_public(data.jwk), None


def _generate(algorithm: KeyAlgorithm) -> tuple[dict[str, Any], dict[str, Any]]:
    key: OKPKey | ECKey
    if algorithm is KeyAlgorithm.ED25519:
        key = OKPKey.generate_key("Ed25519", private=True)
    else:
        key = ECKey.generate_key("P-256", private=True)
    public = _canonical(dict(key.as_dict(private=False)))
    return public, {**dict(key.as_dict(private=True)), "kid": _thumbprint(public)}


def _validated_public(jwk: dict[str, Any]) -> dict[str, Any]:
    if _PRIVATE_MEMBERS & jwk.keys():
        raise InvalidKey("body.jwk", "contains private key material; send only the public key")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if (kty, crv) not in (("OKP", "Ed25519"), ("EC", "P-256")):
        raise InvalidKey("body.jwk", "only Ed25519 (kty OKP) and P-256 (kty EC) keys are accepted")
    try:
        import_key(jwk)  # checks the encoding and that an EC point lies on the curve
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidKey("body.jwk", f"not a valid {crv} public key ({exc})") from None
    return _canonical(jwk)


def _canonical(jwk: dict[str, Any]) -> dict[str, Any]:
    """Only the members that define the public key, so equal keys compare and hash equal."""
    return {name: jwk[name] for name in sorted(_PUBLIC_MEMBERS & jwk.keys())}


def _thumbprint(public_jwk: dict[str, Any]) -> str:
    thumbprint: str = import_key(public_jwk).thumbprint()
    return thumbprint


def _algorithm(public_jwk: dict[str, Any]) -> str:
    return KeyAlgorithm.ED25519.value if public_jwk["kty"] == "OKP" else KeyAlgorithm.P256.value


def _did_key(public_jwk: dict[str, Any]) -> str:
    try:
        return did_key_from_jwk(public_jwk)
    except InvalidDidKey as exc:
        raise InvalidKey("body.jwk", str(exc)) from None
