"""RFC 9457 problem+json for every error, and the audit of every denial.

Validation errors are 422 naming the field; unexpected errors are 500 with the request id only.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tabard.api.middleware import SECURITY_HEADERS
from tabard.audit import service as audit
from tabard.core.errors import TabardError
from tabard.core.logging import get_logger
from tabard.core.runtime import get_context, get_runtime

PROBLEM_JSON = "application/problem+json"
_STATUS_CODES = {
    400: ("BAD_REQUEST", "Bad request"),
    401: ("UNAUTHENTICATED", "Authentication required"),
    403: ("FORBIDDEN", "Forbidden"),
    404: ("NOT_FOUND", "Not found"),
    405: ("METHOD_NOT_ALLOWED", "Method not allowed"),
    406: ("NOT_ACCEPTABLE", "Not acceptable"),
    413: ("PAYLOAD_TOO_LARGE", "Payload too large"),
    415: ("UNSUPPORTED_MEDIA_TYPE", "Unsupported media type"),
}
log = get_logger(__name__)


def problem(
    request: Request,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    body = {
        "type": f"https://tabard.dev/problems/{code.lower().replace('_', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
        **extensions,
    }
    # An unhandled error is answered outside our middleware, so the headers are set here too.
    all_headers = {**SECURITY_HEADERS, **(headers or {})}
    if request_id:
        all_headers["x-request-id"] = request_id
    return JSONResponse(body, status_code=status, headers=all_headers, media_type=PROBLEM_JSON)


async def _tabard_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TabardError)
    return await tabard_error_response(request, exc)


async def tabard_error_response(request: Request, exc: TabardError) -> JSONResponse:
    """The problem+json answer to a domain error (401 and 403 are also audited)."""
    if exc.status in (401, 403):
        await _audit_denial(request, exc)
    return problem(
        request,
        status=exc.status,
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        headers=exc.headers,
        **exc.extensions,
    )


async def _audit_denial(request: Request, exc: TabardError) -> None:
    runtime = get_runtime(request)
    ctx = get_context(request)
    actor = ctx.actor
    route = getattr(request.scope.get("route"), "path", request.url.path)
    org_id = exc.extensions.get("org_id") or actor.org_id
    try:
        await audit.record_denial(
            runtime.database,
            ctx,
            action="request.denied",
            org_id=org_id,
            reason=exc.code,
            target=f"{request.method} {route}",
        )
    except Exception:  # the denial answer must not turn into a 500 if auditing fails
        log.exception("audit of a denial failed", code=exc.code)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
        for error in exc.errors()
    ]
    first = errors[0] if errors else {"field": "request", "message": "invalid"}
    return problem(
        request,
        status=422,
        code="VALIDATION_FAILED",
        title="Validation failed",
        detail=f"{first['field']}: {first['message']}",
        errors=errors,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code, title = _STATUS_CODES.get(exc.status_code, ("HTTP_ERROR", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else title
    return problem(
        request,
        status=exc.status_code,
        code=code,
        title=title,
        detail=detail,
        headers=dict(exc.headers or {}),
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return problem(
        request,
        status=500,
        code="INTERNAL_ERROR",
        title="Internal error",
        detail="An unexpected error occurred; quote the request id when reporting it.",
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TabardError, _tabard_error)  # also used by api.hot_routes
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
