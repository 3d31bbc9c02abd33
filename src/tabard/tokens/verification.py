"""Verifying Tabard's own access tokens on the server: the SDK's verifier (signature with the
published keys, then claims) plus what only the server knows, revocation.

The key set comes from the signing domain (no HTTP round trip), held for a few seconds and
re-read at once when a token names an unknown `kid` (a rotation on another replica), at most
once a second so a flood of forged kids cannot turn into a flood of queries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tabard.core.clock import Clock
from tabard.core.db import Database
from tabard.core.jose import b64url_json
from tabard.sdk.jwt import KeySet, TokenInvalid, UnknownKeyId, verify_jwt
from tabard.signing import service as signing
from tabard.tokens.access_tokens import ACCESS_TOKEN_TYPE
from tabard.tokens.revocation import RevocationList

KEY_SET_TTL_SECONDS = 5.0
_UNKNOWN_KID_REFRESH_SECONDS = 1.0
LEEWAY_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    claims: dict[str, Any]
    kid: str
    raw: str


class AccessTokenVerifier:
    """Verifies access tokens this deployment issued; raises `TokenInvalid` with a reason."""

    def __init__(
        self, issuer: str, database: Database, clock: Clock, revocations: RevocationList
    ) -> None:
        self._issuer = issuer
        self._database = database
        self._clock = clock
        self._revocations = revocations
        self._keys: KeySet | None = None
        self._keys_expire = 0.0
        self._last_forced_refresh = 0.0

    async def verify(self, token: str, *, audience: str | None = None) -> VerifiedToken:
        """Signature, `typ`, `iss`, `aud` (when given), times, then the revocation list."""
        keys = await self._key_set()
        try:
            claims = self._verify_with(token, keys, audience)
        except UnknownKeyId:
            keys = await self._key_set(unknown_kid=True)
            try:
                claims = self._verify_with(token, keys, audience)
            except UnknownKeyId:
                # Not (or no longer) one of our keys: an emergency-revoked key looks like this.
                raise TokenInvalid("bad_signature", "token signature is invalid") from None
        kid = _kid(token)
        revoked_by = await self._revocations.revoked_by(claims, kid)
        if revoked_by == "kid":
            # An emergency key revocation: to clients this is a signature that no longer counts.
            raise TokenInvalid("bad_signature", "token signature is invalid")
        if revoked_by is not None:
            raise TokenInvalid("revoked", "token has been revoked")  # type: ignore[arg-type]
        return VerifiedToken(claims, kid, token)

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

    async def _key_set(self, *, unknown_kid: bool = False) -> KeySet:
        now = time.monotonic()
        stale = self._keys is None or now >= self._keys_expire
        may_force = now - self._last_forced_refresh >= _UNKNOWN_KID_REFRESH_SECONDS
        if stale or (unknown_kid and may_force):
            if unknown_kid:
                self._last_forced_refresh = now
            async with self._database.read_only() as session:
                jwks = await signing.jwks(session, now=self._clock.now())
            self._keys = KeySet.from_jwks(jwks)
            self._keys_expire = now + KEY_SET_TTL_SECONDS
        assert self._keys is not None
        return self._keys


def _kid(token: str) -> str:
    header = b64url_json(token.split(".", 1)[0])  # already verified: well-formed
    return str(header.get("kid", ""))
