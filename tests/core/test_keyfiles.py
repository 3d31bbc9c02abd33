"""Generated key files: created once with mode 0600, never read half-written, refused when
other users can read them."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from tabard.core.keyfiles import load_or_create


class TestLoadOrCreate:
    def test_creates_a_private_key_file_once(self, tmp_path: Path) -> None:
        path = tmp_path / "secret.key"
        first = load_or_create(path)
        assert len(first) == 32
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert load_or_create(path) == first
        assert [entry.name for entry in tmp_path.iterdir()] == ["secret.key"]  # no leftovers

    def test_processes_starting_together_all_get_the_same_key(self, tmp_path: Path) -> None:
        path = tmp_path / "master.key"
        with ProcessPoolExecutor(max_workers=4) as pool:
            keys = list(pool.map(load_or_create, [path] * 16))
        assert len(set(keys)) == 1
        assert len(keys[0]) == 32

    def test_a_file_readable_by_others_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "secret.key"
        load_or_create(path)
        os.chmod(path, 0o644)
        with pytest.raises(PermissionError, match="chmod 600"):
            load_or_create(path)
