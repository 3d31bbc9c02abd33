"""Verifying Tabard's own access tokens on the server: the SDK's verifier (signature with the
published keys, then claims) plus what only the server knows, revocation.

The key set comes from the signing domain's per-process cache (no HTTP round trip), which
re-reads it at once when a token names an unknown `kid` (a rotation on another replica), at most
once a second so a flood of forged kids cannot turn into a flood of queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tabard.core.clock import Clock
from tabard.core.db import Database
from tabard.core.jose import b64url_json
from tabard.core.keystore import KeyStore
from tabard.sdk.jwt import KeySet, TokenInvalid, UnknownKeyId, verify_jwt
from tabard.signing import service as signing
from tabard.signing.service import PublishedKeys
from tabard.tokens.access_tokens import ACCESS_TOKEN_TYPE
from tabard.tokens.revocation import RevocationList, TokenSubjects, subjects_of

LEEWAY_SECONDS = 30.0
_REMEMBERED_TOKENS = 20_000


class BindingWithdrawn(TokenInvalid):
    """The token's agent lost its approved binding: revoked, but answered 403 on the API."""

    def __init__(self) -> None:
        super().__init__("revoked", "the agent's binding has been revoked")  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class _Remembered:
    """A token whose signature and claims verified, with what may revoke it."""

    claims: dict[str, Any]
    kid: str
    subjects: TokenSubjects


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    claims: dict[str, Any]
    kid: str
    raw: str


class AccessTokenVerifier:
    """Verifies access tokens this deployment issued; raises `TokenInvalid` with a reason."""

    def __init__(
        self,
        issuer: str,
        database: Database,
        keystore: KeyStore,
        clock: Clock,
        revocations: RevocationList,
    ) -> None:
        self._issuer = issuer
        self._database = database
        self._keystore = keystore
        self._clock = clock
        self._revocations = revocations
        # The signing domain caches the published keys; parsing them is cached per snapshot.
        self._parsed: tuple[PublishedKeys, KeySet] | None = None
        self._verified: dict[tuple[str, str | None], _Remembered] = {}

    async def verify(self, token: str, *, audience: str | None = None) -> VerifiedToken:
        """Signature, `typ`, `iss`, `aud` (when given), times, then the revocation list.

        A token whose signature and claims verified before is not verified again while it is
        live (a fleet sends the same token for minutes); its times and the revocation list are
        checked on every use. A key revoked in an emergency is in that list too."""
        remembered = self._remembered(token, audience)
        if remembered is None:
            claims = await self._verified_claims(token, audience)
            kid = _kid(token)
            remembered = _Remembered(claims, kid, subjects_of(claims, kid))
            self._remember(token, audience, remembered)
        claims, kid = remembered.claims, remembered.kid
        revoked_by = await self._revocations.revoked_by(remembered.subjects)
        if revoked_by == "kid":
            # An emergency key revocation: to clients this is a signature that no longer counts.
            raise TokenInvalid("bad_signature", "token signature is invalid")
        if revoked_by == "binding":
            raise BindingWithdrawn()
        if revoked_by is not None:
            raise TokenInvalid("revoked", "token has been revoked")  # type: ignore[arg-type]
        return VerifiedToken(claims, kid, token)

    async def _verified_claims(self, token: str, audience: str | None) -> dict[str, Any]:
        try:
            return self._verify_with(token, await self._key_set(), audience)
        except UnknownKeyId as exc:
            keys = await self._key_set(unknown_kid=exc.kid)
            try:
                return self._verify_with(token, keys, audience)
            except UnknownKeyId:
                # Not (or no longer) one of our keys: an emergency-revoked key looks like this.
                raise TokenInvalid("bad_signature", "token signature is invalid") from None

    def _remembered(self, token: str, audience: str | None) -> _Remembered | None:
        entry = self._verified.get((token, audience))
        if entry is None:
            return None
        if float(entry.claims["exp"]) <= self._clock.timestamp() - LEEWAY_SECONDS:
            del self._verified[(token, audience)]
            return None
        return entry

    def _remember(self, token: str, audience: str | None, entry: _Remembered) -> None:
        if len(self._verified) >= _REMEMBERED_TOKENS:
            self._verified.clear()  # bounded; the next uses verify once more
        self._verified[(token, audience)] = entry

    def _verify_with(self, token: str, keys: KeySet, audience: str | None) -> dict[str, Any]:
        return verify_jwt(
            token,
            keys,
            issuer=self._issuer,
            audience=audience,
            now=self._clock.timestamp(),
            leeway_seconds=LEEWAY_SECONDS,
            typ=ACCESS_TOKEN_TYPE,
        )

    async def _key_set(self, unknown_kid: str | None = None) -> KeySet:
        snapshot = await signing.verification_keys(
            self._database, self._keystore, self._clock, kid=unknown_kid
        )
        if self._parsed is None or self._parsed[0] is not snapshot:
            self._parsed = (snapshot, KeySet.from_jwks(snapshot.key_set()))
        return self._parsed[1]


def _kid(token: str) -> str:
    header = b64url_json(token.split(".", 1)[0])  # already verified: well-formed
    return str(header.get("kid", ""))
