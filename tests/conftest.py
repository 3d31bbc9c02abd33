"""Shared fixtures: which real backends this run may use.

A backend whose URL variable is unset is skipped with the reason. In CI (`CI=true`) the URL must be
set and reachable: an unreachable service fails the run instead of silently skipping.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def service_url(variable: str, default_port: int) -> str:
    """Return the service URL from `variable`, or skip (fail in CI) when it is missing or down."""
    url = os.environ.get(variable, "")
    if not url:
        if IN_CI:
            pytest.fail(f"{variable} is not set; CI must run the tests of this backend")
        pytest.skip(f"{variable} is not set: the tests of this backend need a real server")
    if not _reachable(url, default_port):
        message = f"{variable}={url} is unreachable"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return service_url("TABARD_TEST_DATABASE_URL", 5432)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return service_url("TABARD_TEST_REDIS_URL", 6379)


@pytest.fixture(scope="session")
def nats_url() -> str:
    return service_url("TABARD_TEST_NATS_URL", 4222)
