"""The error tree. Services raise these; one handler renders RFC 9457 problem+json.

    TabardError                      500 INTERNAL_ERROR
    ├── BadRequest                   400 BAD_REQUEST
    │   └── InvalidCursor            400 INVALID_CURSOR
    ├── Unauthenticated              401 UNAUTHENTICATED
    ├── Forbidden                    403 FORBIDDEN
    ├── NotFound                     404 NOT_FOUND
    ├── Conflict                     409 CONFLICT
    ├── ValidationFailed             422 VALIDATION_FAILED
    │   └── InvalidField             422 VALIDATION_FAILED (names the field, like schema errors)
    └── ServiceUnavailable           503 SERVICE_UNAVAILABLE

Each domain subclasses these in its own `errors.py` with an explicit, stable `code`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class TabardError(Exception):
    """Base of every error a client may see. `code` is stable API; never derive it from names."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL_ERROR"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extensions = extensions
        self.headers: dict[str, str] = {}


class BadRequest(TabardError):
    status = 400
    code = "BAD_REQUEST"
    title = "Bad request"


class InvalidCursor(BadRequest):
    code = "INVALID_CURSOR"
    title = "Invalid pagination cursor"


class Unauthenticated(TabardError):
    status = 401
    code = "UNAUTHENTICATED"
    title = "Authentication required"

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(detail, **extensions)
        self.headers["WWW-Authenticate"] = 'Bearer realm="tabard"'


class Forbidden(TabardError):
    status = 403
    code = "FORBIDDEN"
    title = "Forbidden"


class NotFound(TabardError):
    status = 404
    code = "NOT_FOUND"
    title = "Not found"


class Conflict(TabardError):
    status = 409
    code = "CONFLICT"
    title = "Conflict"


class ValidationFailed(TabardError):
    status = 422
    code = "VALIDATION_FAILED"
    title = "Validation failed"


class InvalidField(ValidationFailed):
    """A field failed a check the schema cannot express; shaped like a schema validation error."""

    def __init__(self, field: str, reason: str, **extensions: Any) -> None:
        errors = [{"field": field, "message": reason}]
        super().__init__(f"{field}: {reason}", errors=errors, **extensions)


class ServiceUnavailable(TabardError):
    status = 503
    code = "SERVICE_UNAVAILABLE"
    title = "Service unavailable"
