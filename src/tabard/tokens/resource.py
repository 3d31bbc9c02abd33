"""Access tokens presented to Tabard's own API (RFC 6750, RFC 9449 §7, RFC 8705 §3).

A token is accepted when it verifies (signature, claims, revocation), was issued for Tabard's API
(`aud` holds the issuer), and its holder proves possession of whatever it is bound to: the DPoP
key (`cnf.jkt`: scheme `DPoP`, a fresh proof with `ath`) and/or the client certificate
(`cnf.x5t#S256`). An org that requires DPoP refuses its agents' unbound tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from tabard.core.config import Settings
from tabard.core.singleflight import SingleFlight
from tabard.sdk.jwt import TokenInvalid
from tabard.tokens import org_settings
from tabard.tokens.dpop import DpopError, UseDpopNonce
from tabard.tokens.errors import InvalidToken
from tabard.tokens.mtls import certificate_thumbprint, client_certificate_chain
from tabard.tokens.service import TokenService
from tabard.tokens.verification import BindingWithdrawn, VerifiedToken
from tabard.trust.errors import BindingRevoked

_POLICY_CACHE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class PresentedToken:
    scheme: str  # "Bearer" or "DPoP"
    token: str
    method: str
    url: str
    dpop_proofs: list[str]
    certificate_thumbprint: str | None


class ResourceAuthenticator:
    """Turns a presented access token into verified claims or an `InvalidToken` (401)."""

    def __init__(self, service: TokenService) -> None:
        self._service = service
        self._policies: dict[str, tuple[float, org_settings.TokenPolicy]] = {}
        self._policy_reads: SingleFlight[str, org_settings.TokenPolicy] = SingleFlight()

    async def authenticate(self, presented: PresentedToken) -> VerifiedToken:
        scheme = presented.scheme
        try:
            verified = await self._service.verifier.verify(
                presented.token, audience=self._service.issuer
            )
        except BindingWithdrawn:
            raise BindingRevoked(
                "the agent's binding is not approved; its tokens are refused"
            ) from None
        except TokenInvalid as exc:
            raise InvalidToken(str(exc), scheme=scheme) from None
        confirmation = verified.claims.get("cnf") or {}
        jkt = confirmation.get("jkt") if isinstance(confirmation, dict) else None
        await self._check_dpop(presented, jkt)
        if jkt is None and (await self._policy(str(verified.claims.get("org")))).require_dpop:
            raise InvalidToken("this organization requires DPoP-bound tokens", scheme="DPoP")
        bound_certificate = confirmation.get("x5t#S256") if isinstance(confirmation, dict) else None
        if bound_certificate and bound_certificate != presented.certificate_thumbprint:
            raise InvalidToken("the token is bound to a client certificate this request lacks")
        return verified

    async def _check_dpop(self, presented: PresentedToken, jkt: Any) -> None:
        if jkt is None:
            if presented.scheme == "DPoP":
                raise InvalidToken("the token is not DPoP-bound; send it as Bearer", scheme="DPoP")
            return
        if presented.scheme != "DPoP":
            raise InvalidToken(
                "a DPoP-bound token must be sent with the DPoP scheme", scheme="DPoP"
            )
        if len(presented.dpop_proofs) != 1:
            raise InvalidToken(
                "send exactly one DPoP proof", scheme="DPoP", error="invalid_dpop_proof"
            )
        try:
            await self._service.dpop.verify(
                presented.dpop_proofs[0],
                method=presented.method,
                url=presented.url,
                access_token=presented.token,
                expected_jkt=str(jkt),
            )
        except UseDpopNonce as exc:
            refusal = InvalidToken(exc.description, scheme="DPoP", error="use_dpop_nonce")
            refusal.headers["DPoP-Nonce"] = exc.nonce
            raise refusal from None
        except DpopError as exc:
            raise InvalidToken(exc.description, scheme="DPoP", error="invalid_dpop_proof") from None

    def forget_policy(self, org_id: str) -> None:
        """Drop the org's cached policy, so a change made through this replica applies at once."""
        self._policies.pop(org_id, None)

    async def _policy(self, org_id: str) -> org_settings.TokenPolicy:
        now = self._service.runtime.clock.timestamp()
        cached = self._policies.get(org_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        return await self._policy_reads.run(org_id, lambda: self._read_policy(org_id, now))

    async def _read_policy(self, org_id: str, now: float) -> org_settings.TokenPolicy:
        runtime = self._service.runtime
        async with runtime.database.read_only() as session:
            policy = await org_settings.policy_for(session, runtime.settings, org_id)
        if len(self._policies) > 10_000:
            self._policies.clear()
        self._policies[org_id] = (now + _POLICY_CACHE_SECONDS, policy)
        return policy


def presented_token(request: Request, settings: Settings) -> PresentedToken | None:
    """The access token of an `Authorization: Bearer|DPoP <jwt>` header, or None when the header
    carries something else (an org key, the admin secret, or nothing)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() not in ("bearer", "dpop") or not looks_like_jwt(token):
        return None
    return PresentedToken(
        scheme="DPoP" if scheme.lower() == "dpop" else "Bearer",
        token=token,
        method=request.method,
        url=settings.public_url + request.scope.get("root_path", "") + request.scope["path"],
        dpop_proofs=request.headers.getlist("dpop"),
        certificate_thumbprint=certificate_thumbprint(
            client_certificate_chain(request.scope, request.headers, settings)
        ),
    )


def looks_like_jwt(token: str) -> bool:
    """A compact JWS with a JSON header (`eyJ` is base64url of `{"`); secrets never look so."""
    return token.startswith("eyJ") and token.count(".") == 2
