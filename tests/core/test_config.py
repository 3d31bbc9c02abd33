"""Configuration is validated at start-up: exit code 2 and one line per problem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tabard.core.config import ConfigError, load_settings


def _run(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TABARD_")}
    return subprocess.run(
        [sys.executable, "-m", "tabard.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


class TestLoadSettings:
    def test_defaults_need_no_configuration(self) -> None:
        settings = load_settings()
        assert settings.resolved_database_url.startswith("sqlite+aiosqlite:///")
        assert settings.kv_backend == "memory"
        assert settings.bus_backend == "memory"

    def test_every_problem_is_reported_at_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TABARD_KV_BACKEND", "memcache")
        monkeypatch.setenv("TABARD_DATABASE_BACKEND", "postgres")
        with pytest.raises(ConfigError) as raised:
            load_settings()
        assert raised.value.problems == [
            "TABARD_DATABASE_URL: postgres backend selected but URL is empty",
            "TABARD_KV_BACKEND: unsupported value 'memcache' (memory|redis)",
        ]

    def test_postgres_urls_use_asyncpg(self) -> None:
        settings = load_settings(database_url="postgres://u@db/tabard")
        assert settings.resolved_database_url == "postgresql+asyncpg://u@db/tabard"

    def test_production_refuses_generated_and_short_secrets(self) -> None:
        with pytest.raises(ConfigError) as raised:
            load_settings(env="production", public_url="http://tabard.example", secret_key="short")
        problems = "\n".join(raised.value.problems)
        assert "TABARD_ADMIN_SECRET: required in production" in problems
        assert "TABARD_SECRET_KEY: too short for production" in problems
        assert "TABARD_MASTER_KEY: required in production" in problems
        assert "TABARD_PUBLIC_URL: must be https in production" in problems

    def test_production_starts_with_strong_secrets(self) -> None:
        strong = "s" * 32
        settings = load_settings(
            env="production",
            public_url="https://tabard.example",
            admin_secret=strong,
            secret_key=strong,
            master_key=strong,
        )
        assert settings.is_production

    def test_tier_limits_from_json_keep_defaults_for_tiers_left_out(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("TABARD_TIER_AGENT_LIMITS", '{"free": 25, "startup": 100}')
        limits = load_settings().tier_agent_limits
        assert limits == {"free": 25, "pro": 1000, "enterprise": None, "startup": 100}

    def test_negative_tier_limit_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TABARD_TIER_AGENT_LIMITS", '{"free": -1}')
        with pytest.raises(ConfigError) as raised:
            load_settings()
        assert raised.value.problems[0].startswith("TABARD_TIER_AGENT_LIMITS: limits must be")


class TestCommandLine:
    def test_invalid_setting_exits_2_with_one_line_per_problem(self, tmp_path: Path) -> None:
        result = _run(
            {"TABARD_KV_BACKEND": "memcache", "TABARD_BUS_BACKEND": "kafka"},
            "db",
            "status",
            cwd=tmp_path,
        )
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            "TABARD_KV_BACKEND: unsupported value 'memcache' (memory|redis)",
            "TABARD_BUS_BACKEND: unsupported value 'kafka' (memory|nats)",
        ]

    def test_dotenv_file_is_read(self, tmp_path: Path) -> None:
        (tmp_path / ".env").write_text("TABARD_LOG_FORMAT=yaml\n")
        result = _run({}, "db", "status", cwd=tmp_path)
        assert result.returncode == 2
        assert "TABARD_LOG_FORMAT: unsupported value 'yaml' (json|text)" in result.stderr

    def test_version(self, tmp_path: Path) -> None:
        result = _run({}, "version", cwd=tmp_path)
        assert result.returncode == 0
        assert result.stdout.startswith("tabard ")
