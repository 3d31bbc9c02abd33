"""The wired-up parts of a running app, and the request-scoped accessors routes depend on.

The composition root (`tabard.api.app`) builds one `Runtime` and stores it on the app; domain
routers read it (and the resolved principal) through these dependencies, so they never import
the api package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from tabard.core.bus import EventBus
from tabard.core.clock import Clock
from tabard.core.config import Settings
from tabard.core.context import ANONYMOUS, Actor, Context
from tabard.core.db import Database
from tabard.core.keystore import KeyStore
from tabard.core.kv import KeyValueStore


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    database: Database
    kv: KeyValueStore
    bus: EventBus
    keystore: KeyStore
    secret_key: bytes
    draining: bool = field(default=False)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_actor(request: Request) -> Actor:
    actor: Actor = getattr(request.state, "actor", ANONYMOUS)
    return actor


def get_context(request: Request) -> Context:
    runtime = get_runtime(request)
    return Context(
        actor=get_actor(request),
        clock=runtime.clock,
        request_id=getattr(request.state, "request_id", None),
        kv=runtime.kv,
    )


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ActorDep = Annotated[Actor, Depends(get_actor)]
ContextDep = Annotated[Context, Depends(get_context)]
