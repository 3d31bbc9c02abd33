"""`tabard keys rotate` and `tabard keys list` against a SQLite data dir, as an operator runs them;
the server on the same data dir then serves what the command made."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from tabard.api.app import create_app
from tabard.cli.main import app
from tabard.core.config import load_settings

KID_LENGTH = 43  # base64url of a SHA-256 thumbprint


@pytest.fixture
def data_dir(tmp_path: Path, sqlite_template: Path) -> Path:
    shutil.copy(sqlite_template, tmp_path / "tabard.db")
    return tmp_path


def tabard(data_dir: Path, *args: str) -> Result:
    env = {"TABARD_DATA_DIR": str(data_dir), "TABARD_LOG_FORMAT": "text"}
    return CliRunner().invoke(app, list(args), env=env)


def listed(data_dir: Path) -> dict[str, list[str]]:
    """`tabard keys list` as kid → its other columns."""
    result = tabard(data_dir, "keys", "list")
    assert result.exit_code == 0, result.output
    header, *lines = result.stdout.splitlines()
    assert header.split()[:3] == ["KID", "ALG", "STATUS"]
    return {line.split()[0]: line.split()[1:] for line in lines}


def active_kid(output: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith("active: ")]
    kid = line.split()[1]
    assert len(kid) == KID_LENGTH
    return kid


class TestKeysRotate:
    def test_rotate_then_list(self, data_dir: Path) -> None:
        first = tabard(data_dir, "keys", "rotate")
        assert first.exit_code == 0, first.output
        first_kid = active_kid(first.stdout)
        assert "(ES256)" in first.stdout
        second = tabard(data_dir, "keys", "rotate", "--algorithm", "EdDSA")
        assert second.exit_code == 0, second.output
        second_kid = active_kid(second.stdout)
        assert "(Ed25519)" in second.stdout
        assert f"retired: {first_kid} (stays in the JWKS until " in second.stdout
        keys = listed(data_dir)
        assert keys[second_kid][:2] == ["Ed25519", "active"]
        assert keys[first_kid][:2] == ["ES256", "retired"]
        assert keys[first_kid][3] != "-"  # published until
        assert keys[first_kid][4] == "-"  # not revoked

    def test_revoke_previous_revokes_every_previous_key(self, data_dir: Path) -> None:
        first_kid = active_kid(tabard(data_dir, "keys", "rotate").stdout)
        second_kid = active_kid(tabard(data_dir, "keys", "rotate", "--algorithm", "RS256").stdout)
        result = tabard(data_dir, "keys", "rotate", "--revoke-previous")
        assert result.exit_code == 0, result.output
        assert f"revoked: {', '.join(sorted([first_kid, second_kid]))}" in result.stdout
        keys = listed(data_dir)
        assert keys[first_kid][1] == keys[second_kid][1] == "revoked"
        assert keys[first_kid][4] != "-"

    def test_the_server_on_the_same_data_dir_signs_with_the_new_key(self, data_dir: Path) -> None:
        kid = active_kid(tabard(data_dir, "keys", "rotate", "--algorithm", "Ed25519").stdout)
        published = asyncio.run(_served_kids(data_dir))
        assert published == [kid]

    def test_an_unknown_algorithm_is_a_usage_error(self, data_dir: Path) -> None:
        result = tabard(data_dir, "keys", "rotate", "--algorithm", "HS256")
        assert result.exit_code == 2
        assert "unsupported signing algorithm 'HS256'" in result.output
        assert listed(data_dir) == {}

    def test_an_unmigrated_database_is_refused(self, tmp_path: Path) -> None:
        for command in (("keys", "rotate"), ("keys", "list")):
            result = tabard(tmp_path, *command)
            assert result.exit_code == 1
            assert "tabard db upgrade" in result.output


async def _served_kids(data_dir: Path) -> list[str]:
    """The JWKS of an app built on the data dir, and proof the master key opens the key."""
    settings = load_settings(data_dir=data_dir, log_format="text")
    application = create_app(settings)
    runtime = application.state.runtime
    transport = httpx.ASGITransport(app=application)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as http:
            response = await http.get("/.well-known/jwks.json")
            ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        return [key["kid"] for key in response.json()["keys"]]
    finally:
        await application.state.token_service.close()
        await runtime.kv.close()
        await runtime.bus.close()
        await runtime.database.close()
