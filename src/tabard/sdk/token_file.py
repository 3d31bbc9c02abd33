"""The agent's token file: what registration returned, kept so a restarted process reuses it.

Written with mode 0600 (atomically: to a temporary file, then renamed); a file others may read
is refused with a message saying how to fix it, since it holds the agent's client secret.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


class TokenFileError(Exception):
    """The token file cannot be used; the message says what to do."""


@dataclass(frozen=True)
class AgentCredentials:
    """What an agent process needs to obtain tokens: who it is and its client secret (or its
    certificate and key files)."""

    server: str
    org_id: str
    agent_id: str
    agent_name: str
    client_id: str
    client_secret: str | None = None
    certificate_file: str | None = None
    key_file: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AgentCredentials:
        fields = {name: data.get(name) for name in cls.__dataclass_fields__}
        missing = [
            name for name in ("server", "org_id", "agent_id", "client_id") if not fields[name]
        ]
        if missing:
            raise TokenFileError(f"the token file lacks {', '.join(missing)}; re-register")
        return cls(**fields)  # type: ignore[arg-type]


def read(path: Path) -> AgentCredentials | None:
    """The credentials in `path`, or None when there is no such file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenFileError(
            f"{path} is readable by other users (mode {stat.filemode(mode)}); it holds the "
            f"agent's credentials: run `chmod 600 {path}` (or delete it and re-register)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TokenFileError(
            f"{path} is not a token file ({exc}); delete it and re-register"
        ) from None
    if not isinstance(data, dict):
        raise TokenFileError(f"{path} is not a token file; delete it and re-register")
    return AgentCredentials.from_json(data)


def write(path: Path, credentials: AgentCredentials) -> None:
    """Store the credentials with mode 0600, replacing the file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(asdict(credentials), handle, indent=2)
    os.replace(temporary, path)
