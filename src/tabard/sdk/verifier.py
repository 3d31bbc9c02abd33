"""Access-token verification for resource servers, with the issuer's JWKS fetched and cached.

`TokenVerifier` finds the JWKS (its `jwks_uri`, or the issuer's RFC 8414 metadata), keeps it for
the time the response allows (`Cache-Control: max-age`, RFC 9111 §4.2, bounded by
`cache_seconds`), fetches it again when a token names an unknown `kid` (a key rotation), and
verifies every token locally with `verify_jwt`. Fetches are rate-limited so that tokens with
made-up `kid`s cannot turn the verifier against the issuer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from tabard.sdk.jwt import DEFAULT_ALGORITHMS, KeySet, UnknownKeyId, verify_jwt

logger = logging.getLogger("tabard.sdk.verifier")

METADATA_SUFFIX = "/.well-known/oauth-authorization-server"
_JWKS_ACCEPT = "application/jwk-set+json, application/json"


class KeySetUnavailable(Exception):
    """The issuer's keys could not be fetched (and none are cached): a server-side problem, not a
    reason to call the token invalid."""


class TokenVerifier:
    """`await TokenVerifier(issuer, audience=...).verify(token)` → the token's claims.

    Raises `TokenInvalid` (see `verify_jwt`) or `KeySetUnavailable`. Close it with `aclose()` (or
    use `async with`) unless you passed your own `http` client.
    """

    def __init__(
        self,
        issuer: str,
        *,
        audience: str | None = None,
        jwks_uri: str | None = None,
        http: httpx.AsyncClient | None = None,
        leeway_seconds: float = 30,
        cache_seconds: float = 300,
        min_refresh_interval_seconds: float = 10,
        clock: Callable[[], float] = time.time,
        typ: str | None = "at+jwt",
        algorithms: frozenset[str] = DEFAULT_ALGORITHMS,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self._jwks_uri = jwks_uri
        self._http = http
        self._owns_http = http is None
        self._leeway = leeway_seconds
        self._cache_seconds = cache_seconds
        self._min_interval = min_refresh_interval_seconds
        self._clock = clock
        self._typ = typ
        self._algorithms = algorithms
        self._keys: KeySet | None = None
        self._generation = 0  # bumped by every successful fetch
        self._expires_at = 0.0
        self._last_attempt: float | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> TokenVerifier:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid access token; one JWKS refresh is tried on an unknown `kid`."""
        keys, generation = await self._fresh_keys()
        try:
            return self._verify(token, keys)
        except UnknownKeyId:
            refreshed = await self._refresh_for_unknown_kid(generation)
            if refreshed is None:
                raise
            return self._verify(token, refreshed)

    async def key_set(self) -> KeySet:
        """The issuer's current keys, fetched if none are cached or the cached ones are stale."""
        keys, _ = await self._fresh_keys()
        return keys

    def _verify(self, token: str, keys: KeySet) -> dict[str, Any]:
        return verify_jwt(
            token,
            keys,
            issuer=self.issuer,
            audience=self.audience,
            now=self._clock(),
            leeway_seconds=self._leeway,
            typ=self._typ,
            algorithms=self._algorithms,
        )

    async def _fresh_keys(self) -> tuple[KeySet, int]:
        if self._keys is None or self._clock() >= self._expires_at:
            async with self._lock:
                # Checked again under the lock: a concurrent caller may have fetched already.
                if self._keys is None or self._clock() >= self._expires_at:
                    await self._refresh()
        assert self._keys is not None  # _refresh raises when it has nothing to offer
        return self._keys, self._generation

    async def _refresh_for_unknown_kid(self, seen_generation: int) -> KeySet | None:
        """Newer keys than the ones that did not know the `kid`, or None if none may be fetched."""
        async with self._lock:
            if self._generation == seen_generation:
                await self._refresh()  # rate-limited: at most once per min_refresh_interval
            return self._keys if self._generation != seen_generation else None

    def _may_fetch(self) -> bool:
        last = self._last_attempt
        return last is None or self._clock() - last >= self._min_interval

    async def _refresh(self) -> None:
        """Fetch the JWKS; on failure keep serving cached keys and try again after the interval."""
        if not self._may_fetch():
            if self._keys is None:
                raise KeySetUnavailable("the issuer's JWKS could not be fetched; retrying soon")
            return
        now = self._last_attempt = self._clock()
        try:
            keys, lifetime = await self._fetch()
        except KeySetUnavailable:
            if self._keys is None:
                raise
            logger.warning("JWKS refresh failed; keeping the cached keys", exc_info=True)
            self._expires_at = now + self._min_interval
            return
        self._keys, self._expires_at = keys, now + lifetime
        self._generation += 1

    async def _fetch(self) -> tuple[KeySet, float]:
        """The JWKS and how long it may be used."""
        uri = self._jwks_uri or await self._discover_jwks_uri()
        response = await self._get(uri, _JWKS_ACCEPT)
        try:
            keys = KeySet.from_jwks(response.json())
        except ValueError as error:
            raise KeySetUnavailable(f"{uri} did not answer a JWK Set: {error}") from error
        lifetime = freshness_lifetime(response.headers, self._cache_seconds)
        return keys, max(lifetime, self._min_interval)

    async def _discover_jwks_uri(self) -> str:
        """`jwks_uri` from the issuer's metadata, whose `issuer` must be ours (RFC 8414 §3.3)."""
        url = metadata_url(self.issuer)
        response = await self._get(url, "application/json")
        try:
            metadata = response.json()
        except ValueError as error:
            raise KeySetUnavailable(f"{url} did not answer JSON") from error
        if not isinstance(metadata, dict) or metadata.get("issuer") != self.issuer:
            raise KeySetUnavailable(f"{url} describes another issuer than {self.issuer}")
        jwks_uri = metadata.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise KeySetUnavailable(f"{url} has no jwks_uri")
        self._jwks_uri = jwks_uri
        return jwks_uri

    async def _get(self, url: str, accept: str) -> httpx.Response:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10.0)
        try:
            response = await self._http.get(url, headers={"Accept": accept})
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise KeySetUnavailable(f"GET {url} failed: {error}") from error
        return response


def metadata_url(issuer: str) -> str:
    """Where an issuer's authorization server metadata lives (RFC 8414 §3.1): the well-known
    suffix goes between the host and the issuer's path."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, METADATA_SUFFIX + path, "", ""))


def freshness_lifetime(headers: httpx.Headers, ceiling: float) -> float:
    """Seconds a response stays fresh (RFC 9111 §4.2.1, §4.2.3): `max-age` minus `Age`, 0 for
    `no-store`/`no-cache`, `ceiling` when there is no `max-age`; never above `ceiling`."""
    max_age: float | None = None
    for directive in headers.get("cache-control", "").lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name in ("no-store", "no-cache"):
            return 0.0
        if name == "max-age":
            max_age = _seconds(value.strip('"')) or 0.0  # an unreadable max-age means stale
    if max_age is None:
        return ceiling
    age = _seconds(headers.get("age", "0")) or 0.0
    return max(0.0, min(max_age - age, ceiling))


def _seconds(value: str) -> float | None:
    return float(value) if value.isdigit() else None
