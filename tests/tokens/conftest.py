"""Fixtures of the token-service tests: settings a module or test may override."""

from __future__ import annotations

from typing import Any

import pytest

from tabard.core.config import Settings


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Settings to change for a test: override this fixture (or parametrize it)."""
    return {}


@pytest.fixture
def settings(settings: Settings, overrides: dict[str, Any]) -> Settings:
    """The shared settings (SQLite and PostgreSQL) with this test's overrides."""
    return settings.model_copy(update=overrides)
