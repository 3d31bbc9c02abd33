"""In-transaction hooks: how a lower domain lets the domains built on it act in its unit of work.

A lower domain cannot import the domains that depend on it (registry cannot import credentials,
tenancy cannot import registry), yet some changes must reach them in the same transaction:
retiring an agent revokes its credentials; deleting an org is refused while it owns agents. The
lower domain declares a `Hook`; the composition root registers the higher domains' service
functions on it, so the wiring is written down in one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from tabard.core.context import Context

T = TypeVar("T")
Handler = Callable[[AsyncSession, Context, T], Awaitable[None]]


class Hook(Generic[T]):
    """An ordered set of handlers run inside the caller's session; any handler may raise to veto."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._handlers: list[Handler[T]] = []

    def register(self, handler: Handler[T]) -> None:
        """Add `handler` once (registering it again is a no-op, so app factories may repeat)."""
        if handler not in self._handlers:
            self._handlers.append(handler)

    async def run(self, session: AsyncSession, ctx: Context, subject: T) -> None:
        for handler in self._handlers:
            await handler(session, ctx, subject)
