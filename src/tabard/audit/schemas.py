"""Audit API shapes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel


class Outcome(StrEnum):
    SUCCESS = "success"
    DENIED = "denied"
    ERROR = "error"


class AuditEventOut(BaseModel):
    id: str
    sequence: int
    chain_id: str
    chain_seq: int
    occurred_at: datetime
    org_id: str | None
    actor_kind: str
    actor_id: str | None
    action: str
    outcome: Outcome
    target: str | None
    request_id: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditVerification(BaseModel):
    verified: bool
    checked: int
    first_broken_id: str | None
