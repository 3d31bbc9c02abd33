"""Pure-ASGI middleware: request id, trace span, security headers, metrics, one access log line."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Iterable, Mapping

import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tabard.core import metrics
from tabard.core.logging import FIELD_REQUEST_ID, FIELD_SPAN_ID, FIELD_TRACE_ID, get_logger
from tabard.core.tracing import RequestSpans

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
_SECURITY_HEADERS_RAW = tuple(
    (name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()
)
log = get_logger("tabard.access")
# Asked directly whether debug is on: structlog's proxy only knows once logging is configured.
_access_level = logging.getLogger("tabard.access")


class RequestContextMiddleware:
    """Outermost layer: everything inside sees the request id and a bound log context.

    Successful requests to `quiet_routes` (method, path) log their access line at debug: a
    fleet's heartbeats come thousands a second and would drown every other line. Their metrics
    and any failure are still recorded as for every route.
    """

    def __init__(
        self,
        app: ASGIApp,
        spans: RequestSpans,
        quiet_routes: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        self.app = app
        self.spans = spans
        self.quiet_routes = quiet_routes
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = _with_our_headers(
                    message.get("headers", ()),
                    request_id,
                    # The caller's rate-limit state, counted when its principal was resolved.
                    scope["state"].get("rate_limit_headers"),
                )
            await send(message)

        span = self.spans.start(f"HTTP {scope['method']}", _incoming_trace(scope))
        attached = otel_context.attach(trace.set_span_in_context(span))
        span_context = span.get_span_context()
        structlog.contextvars.bind_contextvars(
            **{
                FIELD_REQUEST_ID: request_id,
                FIELD_TRACE_ID: format(span_context.trace_id, "032x"),
                FIELD_SPAN_ID: format(span_context.span_id, "016x"),
            }
        )
        try:
            await self.app(scope, receive, send_with_headers)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR)
            raise
        finally:
            route = _route_template(scope)
            span.update_name(f"{scope['method']} {route}")
            span.set_attribute("http.response.status_code", status)
            self._observe(scope, route, status, time.perf_counter() - started)
            structlog.contextvars.clear_contextvars()
            span.end()
            otel_context.detach(attached)

    def _series(self, method: str, route: str, status: int) -> tuple[Counter, Histogram]:
        """The request's metric children, looked up once per label set: `labels()` takes a
        lock and builds a key each call. Bounded, as the labels are (route templates)."""
        key = (method, route, status)
        series = self._children.get(key)
        if series is None:
            series = (
                metrics.HTTP_REQUESTS.labels(method, route, str(status)),
                metrics.HTTP_LATENCY.labels(method, route),
            )
            self._children[key] = series
        return series

    def _observe(self, scope: Scope, route: str, status: int, elapsed: float) -> None:
        method = scope["method"]
        requests, latency = self._series(method, route, status)
        requests.inc()
        latency.observe(elapsed)
        level = logging.INFO
        if status < 400 and (method, route) in self.quiet_routes:
            level = logging.DEBUG
            if not _access_level.isEnabledFor(level):
                return  # skip building a line nobody will see, on the hottest path
        actor = scope.get("state", {}).get("actor")
        log.log(
            level,
            "request",
            method=method,
            route=route,
            status=status,
            latency_ms=round(elapsed * 1000, 3),
            principal=getattr(actor, "kind", None) and f"{actor.kind.value}:{actor.id}",
        )


def _with_our_headers(
    headers: Iterable[tuple[bytes, bytes]],
    request_id: str,
    rate_limit_headers: Mapping[str, str] | None,
) -> list[tuple[bytes, bytes]]:
    """The response's headers plus the request id (replacing any) and, where the endpoint set
    none of the same name, the security and rate-limit headers. Built on the raw list:
    `MutableHeaders` scans the whole list again for every name it sets, on every response."""
    out = [(name, value) for name, value in headers if name.lower() != b"x-request-id"]
    present = {name.lower() for name, _ in out}
    out.append((b"x-request-id", request_id.encode("latin-1")))
    out += [header for header in _SECURITY_HEADERS_RAW if header[0] not in present]
    for name, value in (rate_limit_headers or {}).items():
        raw_name = name.lower().encode("latin-1")
        if raw_name not in present:
            out.append((raw_name, value.encode("latin-1")))
    return out


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if _CLIENT_REQUEST_ID.match(candidate):
                return candidate
    # A correlation id, not a secret: the process's PRNG rather than uuid4's os.urandom, whose
    # syscall was a sixth of a heartbeat's cost under load (2,900 to 3,450 beats/s, bench/).
    return f"{random.getrandbits(128):032x}"


def _incoming_trace(scope: Scope) -> Context | None:
    """The caller's trace (W3C `traceparent`/`tracestate`), so our span joins it."""
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in (b"traceparent", b"tracestate")
    }
    return propagate.extract(carrier) if carrier else None


def _route_template(scope: Scope) -> str:
    # Templates, not raw paths: label values must stay bounded whatever ids clients send.
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "unmatched"
