"""The hash chain that makes the audit log tamper-evident.

Each event's hash is SHA-256 over the previous event's hash and the event's own content in
RFC 8785 (JCS) canonical JSON. There is one chain per organization (and one for platform events),
so requests of different orgs never wait for each other; see docs/audit.md.

This module is pure: the offline verifier (`tabard audit verify FILE`) uses it without a server.
"""

from __future__ import annotations

import hashlib
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
    canonical = rfc8785.dumps({field: content[field] for field in HASHED_FIELDS})
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()


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
