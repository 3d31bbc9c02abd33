"""The hash chain that makes the audit log tamper-evident.

Each event's hash is SHA-256 over the previous event's hash and the event's own content in
RFC 8785 (JCS) canonical JSON. There is one chain per organization (and one for platform events),
so requests of different orgs never wait for each other; see docs/audit.md.

This module is pure: the offline verifier (`tabard audit verify FILE`) uses it without a server.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import rfc8785

GENESIS_HASH = "0" * 64
PLATFORM_CHAIN = "_platform"

HASHED_FIELDS = (
    "id",
    "chain_id",
    "chain_seq",
    "occurred_at",
    "org_id",
    "actor_kind",
    "actor_id",
    "action",
    "outcome",
    "target",
    "request_id",
    "details",
)


def format_time(moment: datetime) -> str:
    """The one textual form of a timestamp that enters a hash (UTC, microseconds, `Z`)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_for(org_id: str | None) -> str:
    return org_id or PLATFORM_CHAIN


def event_hash(prev_hash: str, content: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and the canonical JSON of the hashed fields."""
    canonical = canonical_json({field: content[field] for field in HASHED_FIELDS})
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()


# Floats that JSON.stringify writes exactly as Python's repr does: shortest round-trip digits in
# plain decimal notation (no exponent), and not integral (those lose their ".0").
_PLAIN_FLOATS = (1e-4, 1e16)
_MAX_SAFE_INTEGER = 2**53 - 1
# Keys with characters past U+D7FF could sort differently: RFC 8785 orders by UTF-16 units.
_PLAIN_KEY_LIMIT = "\ud7ff"


# One encoder, built once: `json.dumps` with options builds a new one per call.
_JCS_SHAPED = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)


class _NotPlain(Exception):
    """A value whose RFC 8785 form the standard json module would not produce."""


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) canonical JSON of `value`, byte for byte what `rfc8785.dumps` gives.

    The rfc8785 library is pure Python and costs ~100 µs an audit event, which a flush of ten
    thousand heartbeats' audit rows felt. Values of the shapes the log holds (strings without
    surrogates, safe integers, plain floats) go through the C json encoder, whose output for
    them is the JCS one; anything else goes to the library.
    """
    try:
        plain = _plain(value)
    except _NotPlain:
        return rfc8785.dumps(value)
    return _JCS_SHAPED.encode(plain).encode()


def _plain(value: Any) -> Any:
    """`value` with integral floats as ints (JCS writes 5.0 as 5); _NotPlain if it has any part
    the json module would write differently from RFC 8785."""
    if value is None or value is True or value is False:
        return value
    kind = type(value)
    if isinstance(value, str):  # StrEnum members too: both encoders write their value
        if not value.isascii() and any("\ud800" <= char <= "\udfff" for char in value):
            raise _NotPlain
        return value
    if kind is int:
        if -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER:
            return value
        raise _NotPlain
    if kind is float:
        return _plain_float(value)
    if kind is dict:
        for key in value:
            if type(key) is not str or (not key.isascii() and max(key) > _PLAIN_KEY_LIMIT):
                raise _NotPlain
        return {key: _plain(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_plain(item) for item in value]
    raise _NotPlain


def _plain_float(value: float) -> float | int:
    if value.is_integer():
        if abs(value) <= _MAX_SAFE_INTEGER:
            return int(value)  # also turns -0.0 into 0, as JSON.stringify does
        raise _NotPlain
    if _PLAIN_FLOATS[0] <= abs(value) < _PLAIN_FLOATS[1]:
        return value
    raise _NotPlain  # exponent notation, infinities and NaN: the library's rules (or error)


@dataclass(slots=True)
class VerifyResult:
    verified: bool
    checked: int
    first_broken_id: str | None


class ChainVerifier:
    """Checks events one at a time, holding only the last link of each chain in memory.

    Feed events with each chain in `chain_seq` order (chains may interleave). An event is broken
    when its sequence skips (a row was deleted), its `prev_hash` is not the hash of its
    predecessor, or its own `hash` does not match its content (a row was edited).
    """

    def __init__(self) -> None:
        self.heads: dict[str, tuple[int, str]] = {}
        self.checked = 0
        self.first_broken_id: str | None = None

    def feed(self, event: dict[str, Any]) -> bool:
        """Check one event; False (and remember it) at the first broken link."""
        self.checked += 1
        last_seq, last_hash = self.heads.get(event["chain_id"], (0, GENESIS_HASH))
        intact = (
            event["chain_seq"] == last_seq + 1
            and event["prev_hash"] == last_hash
            and event_hash(last_hash, event) == event["hash"]
        )
        if not intact:
            self.first_broken_id = event["id"]
            return False
        self.heads[event["chain_id"]] = (event["chain_seq"], event["hash"])
        return True

    def result(self) -> VerifyResult:
        return VerifyResult(self.first_broken_id is None, self.checked, self.first_broken_id)


def verify_events(events: Iterable[dict[str, Any]]) -> VerifyResult:
    """Check exported events (see `ChainVerifier`), stopping at the first broken link."""
    verifier = ChainVerifier()
    for event in events:
        if not verifier.feed(event):
            break
    return verifier.result()
