"""The token service: one object per process holding what the token endpoint, introspection,
revocation and API authentication share (key cache, revocation list, DPoP verifier).

Routes parse HTTP; this module decides. Denials of client authentication are audited with their
exact reason; issued tokens are audited (`token.issued`) before the response leaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tabard.audit import service as audit
from tabard.core.context import ANONYMOUS, Actor, ActorKind, Context
from tabard.core.group_commit import GroupCommitter
from tabard.core.metrics import DELEGATION_CHAINS_CREATED, TOKEN_REQUESTS_DENIED, TOKENS_ISSUED
from tabard.core.runtime import Runtime
from tabard.credentials import service as credentials
from tabard.limits import service as limits
from tabard.limits.schemas import QuotaKind
from tabard.pki import certificates
from tabard.pki.errors import CertificateRefused
from tabard.pki.login import CertificateLogin
from tabard.registry import service as registry
from tabard.registry.errors import AgentNotFound
from tabard.signing import service as signing
from tabard.tenancy import service as tenancy
from tabard.tenancy.schemas import OrgStatus
from tabard.tokens import org_settings
from tabard.tokens.access_tokens import (
    ACCESS_TOKEN_TYPE,
    ID_TOKEN_TYPE,
    TOKEN_TYPE_ACCESS_TOKEN,
    Grant,
    access_token_claims,
    encode_jwt,
    id_token_claims,
)
from tabard.tokens.caller import AgentFacts, Caller, TokenRequest
from tabard.tokens.caller_cache import CallerCache
from tabard.tokens.client_auth import (
    ClientAuthentication,
    ClientAuthenticator,
    certificate_refusal,
    presented_authentication,
)
from tabard.tokens.dpop import DpopError, DpopVerifier, UseDpopNonce
from tabard.tokens.errors import (
    InvalidClient,
    InvalidDpopProofError,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    OAuthError,
    UnauthorizedClient,
    UnsupportedGrantType,
    UseDpopNonceError,
)
from tabard.tokens.grants import client_credentials, token_exchange
from tabard.tokens.models import DelegationChain
from tabard.tokens.mtls import certificate_thumbprint
from tabard.tokens.revocation import (
    LONGEST_TOKEN_LIFETIME,
    RevocationKind,
    RevocationList,
    revocation_key,
)
from tabard.tokens.verification import AccessTokenVerifier
from tabard.trust import service as trust

# Refusals an operator wants in the audit log; protocol steps (use_dpop_nonce) and malformed
# requests are only counted.
_AUDITED_DENIALS = (
    InvalidClient,
    InvalidGrant,
    InvalidScope,
    UnauthorizedClient,
    InvalidDpopProofError,
)
LAST_USED_RESOLUTION_SECONDS = 60.0
_TIMER_SLACK_SECONDS = 0.02
_RECORDED_USE_ENTRIES = 100_000
GRANT_TYPES = (client_credentials.GRANT_TYPE, token_exchange.GRANT_TYPE)
_GRANT_NAMES = {
    client_credentials.GRANT_TYPE: "client_credentials",
    token_exchange.GRANT_TYPE: "token_exchange",
}


@dataclass(frozen=True, slots=True)
class TokenResponse:
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class TokenService:
    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.issuer = settings.public_url
        self.token_endpoint = f"{self.issuer}/oauth2/token"
        self.revocations = RevocationList(
            runtime.database, runtime.kv, runtime.clock, settings.revocation_sync_seconds
        )
        self.verifier = AccessTokenVerifier(
            self.issuer, runtime.database, runtime.keystore, runtime.clock, self.revocations
        )
        self.clients = ClientAuthenticator(
            secret_key=runtime.secret_key,
            kv=runtime.kv,
            clock=runtime.clock,
            audiences=(self.token_endpoint, self.issuer),
            trust_domain=settings.resolved_trust_domain,
        )
        self._recorded_use: dict[str, float] = {}
        self.callers = CallerCache(self.revocations, runtime.clock, runtime.secret_key)
        self.committer: GroupCommitter[IssueRecord] = GroupCommitter(
            runtime.database, _write_issue_records
        )
        self.dpop = DpopVerifier(
            runtime.kv,
            runtime.secret_key,
            runtime.clock,
            nonce_required=settings.dpop_nonce_required,
        )

    async def token(self, request: TokenRequest) -> TokenResponse:
        """RFC 6749 §5.1 success, or an `OAuthError` (audited when the client was refused)."""
        try:
            return await self._token(request)
        except OAuthError as exc:
            TOKEN_REQUESTS_DENIED.labels(exc.error).inc()
            if isinstance(exc, _AUDITED_DENIALS):
                await self._audit_denial(request, exc)
            raise

    async def _token(self, request: TokenRequest) -> TokenResponse:
        grant_type = request.params.get("grant_type")
        if not grant_type:
            raise InvalidRequest("grant_type is required")
        if grant_type not in GRANT_TYPES:
            raise UnsupportedGrantType(f"unsupported grant_type {grant_type!r}")
        # The limit counts the presented client id before any check, so guessing secrets is
        # throttled like any other request of that client.
        presented = _presented(request)
        rate_headers = await limits.check_token_rate(
            self.runtime.kv, self.runtime.settings, self.runtime.clock, presented.claimed_client_id
        )
        caller = await self._authenticated(presented)
        try:
            issued = await self._grant(request, caller, grant_type)
            issued.headers.update(rate_headers)
            return issued
        except OAuthError as exc:
            exc.client_id, exc.org_id = caller.client.client_id, caller.client.org_id
            raise

    async def _grant(self, request: TokenRequest, caller: Caller, grant_type: str) -> TokenResponse:
        confirmation = await self._confirmation(request, caller)
        now = self.runtime.clock.timestamp()
        new_chain = False
        if grant_type == client_credentials.GRANT_TYPE:
            grant = client_credentials.client_credentials_grant(
                caller, request, self.issuer, confirmation, now
            )
        else:
            delegation = await token_exchange.token_exchange_grant(
                caller,
                request,
                self.verifier,
                issuer=self.issuer,
                max_depth=self.runtime.settings.delegation_max_depth,
                now=now,
                confirmation=confirmation,
            )
            grant, new_chain = delegation.grant, delegation.new_chain
        await limits.consume_quota(
            self.runtime.kv,
            self.runtime.settings,
            self.runtime.clock,
            caller.client.org_id,
            caller.org_tier,
            QuotaKind.TOKEN,
        )
        return await self._issue(request, caller, grant, grant_type, int(now), new_chain)

    async def authenticate_client(self, request: TokenRequest) -> Caller:
        """The authenticated, active client with its active agent and its org's policy."""
        return await self._authenticated(_presented(request))

    async def _authenticated(self, presented: ClientAuthentication) -> Caller:
        cache_key = self._cache_key(presented)
        if cache_key is not None:
            cached = await self.callers.get(cache_key)
            if cached is not None:
                return cached
        try:
            caller = await self._caller(presented)
            if caller.client.certificate is not None and not caller.client.certificate.pinned:
                await self._pin_first_certificate(caller.client.certificate)
        except InvalidClient as exc:
            exc.client_id = exc.client_id or presented.client_id
            raise
        await self._past_recent_cutoffs(caller)
        if cache_key is not None:
            self.callers.put(cache_key, caller)
        return caller

    def _cache_key(self, presented: ClientAuthentication) -> tuple[str, str] | None:
        """Secrets and mTLS certificates can be remembered; an assertion is single-use and
        must be verified every time."""
        if presented.secret is not None:
            return self.callers.key(presented.client_id, presented.secret)
        if presented.certificates and presented.assertion is None:
            thumbprint = certificate_thumbprint(presented.certificates) or ""
            return self.callers.certificate_key(presented.client_id, thumbprint)
        return None

    async def _past_recent_cutoffs(self, caller: Caller) -> None:
        """Wait out a revocation of this very second (its cut-off rounds up to the next whole
        second, and `iat` is whole seconds), so a client re-enabled right after it (a
        re-approved binding, a reactivated agent) is not handed a token that is born dead."""
        client = caller.client
        subjects = (
            (RevocationKind.AGENT, client.agent_id),
            (RevocationKind.BINDING, client.agent_id),
            (RevocationKind.CLIENT, client.client_id),
            (RevocationKind.ORG, client.org_id),
        )
        entries = await self.revocations.entries([revocation_key(*s) for s in subjects])
        latest = max((float(entry) for entry in entries if entry is not None), default=0.0)
        wait = latest - self.runtime.clock.timestamp()
        if 0 < wait <= 1:
            # The event loop may wake a timer a little early; the token's iat must not.
            await asyncio.sleep(wait + _TIMER_SLACK_SECONDS)

    async def _caller(self, presented: ClientAuthentication) -> Caller:
        runtime = self.runtime
        async with runtime.database.read_only() as session:
            client = await self.clients.authenticate(session, presented)
            try:
                agent = await registry.get_agent(session, client.org_id, client.agent_id)
            except AgentNotFound:
                raise _refused("agent_not_found", client.org_id) from None
            org = await tenancy.get_org(session, client.org_id)
            policy = await org_settings.policy_for(session, runtime.settings, client.org_id)
            binding = await trust.binding_decision(session, client.org_id, client.agent_id)
        if org.status != OrgStatus.ACTIVE.value:
            raise _refused(f"org_{org.status}", client.org_id)
        if binding.refusal is not None:
            refusal = _refused(binding.refusal, client.org_id)
            refusal.code, refusal.description = binding.refusal, _BINDING[binding.refusal]
            raise refusal
        return Caller(client, AgentFacts.of(agent), org.tier, policy, binding.scope)

    async def _pin_first_certificate(self, login: CertificateLogin) -> None:
        """The first certificate login pins the certificate (a concurrent first login with
        another certificate loses: `CERTIFICATE_MISMATCH`)."""
        runtime = self.runtime
        actor = Actor(ActorKind.AGENT, login.agent_id, login.org_id)
        ctx = Context(actor, runtime.clock, None, runtime.kv)
        try:
            async with runtime.database.unit_of_work() as session:
                await certificates.pin_at_first_login(
                    session,
                    ctx,
                    org_id=login.org_id,
                    agent_id=login.agent_id,
                    thumbprint=login.thumbprint,
                    ca_id=login.ca_id,
                )
        except CertificateRefused as refused:
            raise certificate_refusal(refused) from None

    async def _confirmation(self, request: TokenRequest, caller: Caller) -> dict[str, str] | None:
        """`cnf` of the new token: the DPoP key (RFC 9449 §6), the certificate (RFC 8705 §3)."""
        confirmation: dict[str, str] = {}
        if len(request.dpop_proofs) > 1:
            raise InvalidDpopProofError("send exactly one DPoP header")
        if request.dpop_proofs:
            try:
                proof = await self.dpop.verify(
                    request.dpop_proofs[0], method="POST", url=self.token_endpoint
                )
            except UseDpopNonce as exc:
                raise UseDpopNonceError(exc.description, exc.nonce) from None
            except DpopError as exc:
                raise InvalidDpopProofError(exc.description) from None
            confirmation["jkt"] = proof.jkt
        elif caller.policy.require_dpop:
            raise InvalidDpopProofError(
                "this organization requires DPoP-bound tokens: send a DPoP proof"
            )
        if request.certificate_thumbprint:
            confirmation["x5t#S256"] = request.certificate_thumbprint
        return confirmation or None

    async def _issue(
        self,
        request: TokenRequest,
        caller: Caller,
        grant: Grant,
        grant_type: str,
        now: int,
        new_chain: bool,
    ) -> TokenResponse:
        runtime = self.runtime
        material = await signing.active_key(
            runtime.database,
            runtime.keystore,
            runtime.clock,
            algorithm=runtime.settings.signing_algorithm,
        )
        claims = access_token_claims(self.issuer, grant, now)
        body: dict[str, Any] = {
            "access_token": encode_jwt(material, claims, ACCESS_TOKEN_TYPE),
            "token_type": "DPoP"
            if grant.confirmation and "jkt" in grant.confirmation
            else "Bearer",
            "expires_in": grant.lifetime_seconds,
            "scope": claims["scope"],
        }
        if grant_type == token_exchange.GRANT_TYPE:
            body["issued_token_type"] = TOKEN_TYPE_ACCESS_TOKEN
        if "openid" in grant.scope and grant_type == client_credentials.GRANT_TYPE:
            id_claims = id_token_claims(
                self.issuer, grant, caller.agent.profile(), now, grant.lifetime_seconds
            )
            body["id_token"] = encode_jwt(material, id_claims, ID_TOKEN_TYPE)
        await self._record_issue(request, caller, grant, claims, grant_type, new_chain)
        TOKENS_ISSUED.labels(_GRANT_NAMES[grant_type]).inc()
        headers = {"DPoP-Nonce": self.dpop.new_nonce()} if request.dpop_proofs else {}
        return TokenResponse(body, headers)

    async def _record_issue(
        self,
        request: TokenRequest,
        caller: Caller,
        grant: Grant,
        claims: dict[str, Any],
        grant_type: str,
        new_chain: bool,
    ) -> None:
        runtime = self.runtime
        actor = Actor(ActorKind.AGENT, caller.agent.id, caller.agent.org_id)
        ctx = Context(actor, runtime.clock, request.request_id, runtime.kv)
        details: dict[str, Any] = {
            "grant_type": _GRANT_NAMES[grant_type],
            "client_id": grant.client_id,
            "subject": grant.agent_id,
            "jti": claims["jti"],
            "scope": claims["scope"],
            "expires_at": claims["exp"],
            "bound": sorted(grant.confirmation or {}),
        }
        if grant.chain_id:
            details["chain_id"] = grant.chain_id

        chain = None
        if new_chain and grant.chain_id:
            chain = DelegationChain(
                id=grant.chain_id,
                org_id=grant.org_id,
                subject_agent_id=grant.agent_id,
                root_jti=grant.derived_from[0],
                created_at=runtime.clock.now(),
                # Later links may outlive this token (never the root's day-long bound).
                expires_at=runtime.clock.now() + LONGEST_TOKEN_LIFETIME,
            )
        entry = audit.AuditEntry(ctx, "token.issued", grant.org_id, details=details)
        # Issued tokens are audited before the response leaves, many requests per commit.
        used = self._stale_use(caller.client.credential_id)
        await self.committer.submit(IssueRecord(entry, chain, used))
        if new_chain:
            DELEGATION_CHAINS_CREATED.inc()

    def _stale_use(self, credential_id: str | None) -> str | None:
        """The credential id when its `last_used_at` was not written in the last minute (by this
        process): it is advisory, so it costs a write a minute, not one per token."""
        if credential_id is None:  # a certificate login: no credential row to touch
            return None
        now = self.runtime.clock.timestamp()
        if now - self._recorded_use.get(credential_id, 0.0) < LAST_USED_RESOLUTION_SECONDS:
            return None
        if len(self._recorded_use) > _RECORDED_USE_ENTRIES:
            self._recorded_use.clear()
        self._recorded_use[credential_id] = now
        return credential_id

    async def close(self) -> None:
        await self.committer.close()

    async def userinfo(self, claims: dict[str, Any]) -> dict[str, Any]:
        """OIDC Core §5.3.2: the token subject's current profile."""
        async with self.runtime.database.read_only() as session:
            agent = await registry.get_agent(session, str(claims["org"]), str(claims["sub"]))
        return {"sub": agent.id, **AgentFacts.of(agent).profile()}

    async def _audit_denial(self, request: TokenRequest, exc: OAuthError) -> None:
        runtime = self.runtime
        ctx = Context(ANONYMOUS, runtime.clock, request.request_id, runtime.kv)
        await audit.record_denial(
            runtime.database,
            ctx,
            action="token.denied",
            org_id=exc.org_id,
            reason=exc.reason,
            target=exc.client_id or request.params.get("client_id"),
        )


@dataclass(frozen=True, slots=True)
class IssueRecord:
    """What issuing one token writes: its audit event, the chain of a new delegation, and the
    credential's last-used time when it is stale."""

    entry: audit.AuditEntry
    chain: DelegationChain | None
    used_credential_id: str | None = None


async def _write_issue_records(session: AsyncSession, records: Sequence[IssueRecord]) -> None:
    session.add_all([record.chain for record in records if record.chain is not None])
    used = {record.used_credential_id for record in records} - {None}
    for credential_id in sorted(str(used_id) for used_id in used):
        await credentials.record_use(session, credential_id, records[0].entry.ctx.clock)
    await audit.record_batch(session, [record.entry for record in records])


def _presented(request: TokenRequest) -> ClientAuthentication:
    presented = presented_authentication(
        request.authorization, request.params, request.client_certificates
    )
    if presented is None:
        raise InvalidClient("client authentication is required", reason="no_authentication")
    return presented


def _refused(reason: str, org_id: str) -> InvalidClient:
    refusal = InvalidClient(reason=reason)
    refusal.org_id = org_id
    return refusal


# The client authenticated, so it may learn why its agent may not have tokens.
_BINDING = {
    "BINDING_REQUIRED": "this organization requires an approved binding for the agent",
    "BINDING_REVOKED": "the agent's binding has been revoked",
}
