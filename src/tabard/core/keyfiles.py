"""Secrets that Tabard generates on first boot and keeps in 0600 files under the data dir."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

_FILE_MODE = 0o600


def load_or_create(path: Path, size: int = 32) -> bytes:
    """Read the secret at `path`, creating it (random, mode 0600) if it does not exist yet.

    The secret is written to a private temporary file first and linked into place, so workers
    starting together never read a half-written file: one link wins, the others read its key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return _read(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(size))
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink()
    return _read(path)


def _read(path: Path) -> bytes:
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} is readable by other users; run: chmod 600 {path}")
    return bytes.fromhex(path.read_text().strip())
