"""Tenancy errors."""

from __future__ import annotations

from tabard.core.errors import Conflict, Forbidden, NotFound, Unauthenticated


class OrgNotFound(NotFound):
    code = "ORG_NOT_FOUND"
    title = "Organization not found"


class OrgAlreadyExists(Conflict):
    code = "ORG_ALREADY_EXISTS"
    title = "Organization already exists"


class OrgSuspended(Forbidden):
    code = "ORG_SUSPENDED"
    title = "Organization is suspended"


class OrgNotActive(Forbidden):
    """The org is pending approval or was rejected: it cannot authenticate yet (or ever)."""

    code = "ORG_NOT_ACTIVE"
    title = "Organization is not active"


class OrgStateConflict(Conflict):
    code = "ORG_STATE_CONFLICT"
    title = "Organization is not in a state that allows this"


class ApiKeyNotFound(NotFound):
    code = "API_KEY_NOT_FOUND"
    title = "API key not found"


class InvalidCredentials(Unauthenticated):
    code = "INVALID_CREDENTIALS"
    title = "Invalid credentials"


class NotPermitted(Forbidden):
    code = "NOT_PERMITTED"
    title = "Not permitted"


class AdminSecretNotRotated(Exception):
    """Production start refused: the admin secret is still the one generated on first boot."""
