"""Recently authenticated clients, so a busy client costs no database reads per token.

An entry is keyed by the client id and the keyed digest of the secret it presented (or the
thumbprint of the client certificate it logged in with over mutual TLS), lives a few seconds,
and is used only while nothing says otherwise: every use reads, in one kv round trip,
the revocation entries of the credential, the agent, the org and the binding (revoked,
suspended, decommissioned, withdrawn) and the marker a secret rotation leaves; after a kv
loss the revocation list first catches up from the database. What it may serve stale for at
most `TTL_SECONDS`: an agent's changed capabilities, an org's changed token settings, a binding's
new approval or scope, a previous secret whose grace period just ended. A certificate login
is also dropped at once when the certificate is revoked, its CA replaced, or the agent's pin
changed.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.clock import Clock
from tabard.core.context import Context
from tabard.core.hashing import keyed_digest
from tabard.credentials.service import CredentialRef
from tabard.registry.service import AgentRef
from tabard.tokens.caller import Caller
from tabard.tokens.revocation import RevocationKind, RevocationList, revocation_key

TTL_SECONDS = 5.0
MAX_ENTRIES = 10_000


def _rotated_key(client_id: str) -> str:
    return f"auth:rotated:{client_id}"


def _pin_key(agent_id: str) -> str:
    return f"auth:pin:{agent_id}"


@dataclass(frozen=True, slots=True)
class _Entry:
    caller: Caller
    cached_at: float


class CallerCache:
    def __init__(self, revocations: RevocationList, clock: Clock, secret_key: bytes) -> None:
        self._revocations = revocations
        self._clock = clock
        self._secret_key = secret_key
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def key(self, client_id: str, secret: str) -> tuple[str, str]:
        return client_id, keyed_digest(self._secret_key, secret)

    def certificate_key(self, client_id: str, thumbprint: str) -> tuple[str, str]:
        """A login with a client certificate (its possession proven by the TLS handshake)."""
        return client_id, f"x5t:{thumbprint}"

    async def get(self, key: tuple[str, str]) -> Caller | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock.timestamp()
        client = entry.caller.client
        expired = client.expires_at is not None and client.expires_at <= now
        if expired or now - entry.cached_at > TTL_SECONDS or not await self._unchanged(entry):
            self._entries.pop(key, None)
            return None
        return entry.caller

    def put(self, key: tuple[str, str], caller: Caller) -> None:
        self._entries[key] = _Entry(caller, self._clock.timestamp())
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)

    async def _unchanged(self, entry: _Entry) -> bool:
        """No revocation or marker newer than the entry; for a certificate, none at all of the
        kinds that name it exactly (its revocation, its CA's replacement)."""
        client = entry.caller.client
        timed = [
            revocation_key(RevocationKind.CLIENT, client.client_id),
            revocation_key(RevocationKind.AGENT, client.agent_id),
            revocation_key(RevocationKind.ORG, client.org_id),
            revocation_key(RevocationKind.BINDING, client.agent_id),
            _rotated_key(client.client_id),
        ]
        exact: list[str] = []
        if client.certificate is not None:
            timed.append(_pin_key(client.agent_id))
            exact.append(revocation_key(RevocationKind.CERT, client.certificate.certificate_key))
            if client.certificate.ca_id is not None:
                exact.append(revocation_key(RevocationKind.CA, client.certificate.ca_id))
        values = await self._revocations.entries([*timed, *exact])
        cutoffs, named = values[: len(timed)], values[len(timed) :]
        fresh = all(cutoff is None or float(cutoff) < entry.cached_at for cutoff in cutoffs)
        return fresh and all(value is None for value in named)


async def forget_rotated_secret(
    session: AsyncSession, ctx: Context, credential: CredentialRef
) -> None:
    """`credentials.secret_rotated` handler: every replica stops using cached authentications of
    the credential at once (the old secret may have stopped working)."""
    if ctx.kv is not None:
        cutoff = str(ctx.clock.timestamp() + 1).encode()
        await ctx.kv.set(_rotated_key(credential.client_id), cutoff, ttl_seconds=60)


async def forget_pinned_certificate(session: AsyncSession, ctx: Context, agent: AgentRef) -> None:
    """`pki.pin_changed` handler: every replica stops using cached certificate logins of the
    agent at once (the certificate they used may no longer be the pinned one)."""
    if ctx.kv is not None:
        cutoff = str(ctx.clock.timestamp() + 1).encode()
        await ctx.kv.set(_pin_key(agent.id), cutoff, ttl_seconds=60)
