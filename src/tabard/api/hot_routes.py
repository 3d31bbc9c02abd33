"""The hottest endpoints served straight from the ASGI scope.

FastAPI's router matches routes one by one and resolves every endpoint's dependencies per
request; for the token endpoint, which every agent call starts with, that bookkeeping cost more
than the signature. `HotRoutes` sits inside our request middleware (request id, trace, metrics,
access log and security headers all still apply) and hands an exact (method, path) match to the
endpoint itself; everything else goes on to FastAPI. The routes stay declared on their routers,
so the OpenAPI document still describes them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tabard.api.problems import tabard_error_response
from tabard.core.errors import TabardError

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class HotRoute:
    """A path template, as metrics and logs label the route (what FastAPI's route would say)."""

    path: str


class HotRoutes:
    def __init__(self, app: ASGIApp, routes: Mapping[tuple[str, str], Endpoint]) -> None:
        self.app = app
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = None
        if scope["type"] == "http":
            endpoint = self._routes.get((scope["method"], scope["path"]))
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = HotRoute(scope["path"])
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except TabardError as exc:  # the problem+json FastAPI's handler would have answered
            response = await tabard_error_response(request, exc)
        await response(scope, receive, send)
