"""Who is acting and in which request: passed from routes into services."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tabard.core.clock import Clock
from tabard.core.kv import KeyValueStore


class ActorKind(StrEnum):
    PLATFORM_ADMIN = "platform_admin"
    ORG_KEY = "org_key"
    AGENT = "agent"
    REGISTRATION_TOKEN = "registration_token"  # noqa: S105 - an actor kind: a process enrolling
    SYSTEM = "system"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Actor:
    """The authenticated principal; `org_id` is the tenant it is confined to (None: platform)."""

    kind: ActorKind
    id: str | None = None
    org_id: str | None = None

    @property
    def is_platform_admin(self) -> bool:
        return self.kind is ActorKind.PLATFORM_ADMIN


SYSTEM = Actor(ActorKind.SYSTEM, "tabard")
ANONYMOUS = Actor(ActorKind.ANONYMOUS)


@dataclass(frozen=True, slots=True)
class Context:
    """The acting principal, the request id to trace by, the clock to read time from, and the
    shared kv store (hooks that must reach every replica at once, like revocations, write it)."""

    actor: Actor
    clock: Clock
    request_id: str | None = None
    kv: KeyValueStore | None = None
