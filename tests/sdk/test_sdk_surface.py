"""The SDK's public surface is pinned, and it stays independent of the server."""

from __future__ import annotations

import subprocess
import sys

import tabard.sdk


class TestSurface:
    def test_public_names_are_pinned(self) -> None:
        assert tabard.sdk.__all__ == [
            "ActionContext",
            "ActionFailed",
            "Agent",
            "AgentError",
            "Client",
            "CredentialsRejected",
            "KeySet",
            "KeySetUnavailable",
            "TabardAPIError",
            "TokenFileError",
            "TokenInvalid",
            "TokenVerifier",
            "UnknownKeyId",
            "secret",
            "verify_jwt",
        ]

    def test_import_loads_no_server_dependencies(self) -> None:
        probe = (
            "import sys, tabard.sdk; "
            "print(sorted(m for m in ('sqlalchemy', 'fastapi', 'alembic', 'uvicorn') "
            "if m in sys.modules))"
        )
        result = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
        )
        assert result.stdout.strip() == "[]"
