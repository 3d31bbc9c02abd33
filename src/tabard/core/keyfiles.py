"""Secrets that Tabard generates on first boot and keeps in 0600 files under the data dir."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

_FILE_MODE = 0o600


def load_or_create(path: Path, size: int = 32) -> bytes:
    """Read the secret at `path`, creating it (random, mode 0600) if it does not exist yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    except FileExistsError:
        return _read(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(size))
    return _read(path)


def _read(path: Path) -> bytes:
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} is readable by other users; run: chmod 600 {path}")
    return bytes.fromhex(path.read_text().strip())
