"""Audit domain errors."""

from __future__ import annotations

from tabard.core.errors import NotFound


class AuditEventNotFound(NotFound):
    code = "AUDIT_EVENT_NOT_FOUND"
    title = "Audit event not found"
