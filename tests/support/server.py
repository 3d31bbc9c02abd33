"""A real `tabard serve` process on loopback, for tests that need one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

STARTUP_TIMEOUT = 30.0


def free_port() -> int:
    """A loopback port free at the time of asking (a caller may need it before the start)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    def __init__(
        self,
        data_dir: Path,
        log_format: str = "text",
        extra_env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TABARD_")}
        env |= {"TABARD_DATA_DIR": str(data_dir), "TABARD_LOG_FORMAT": log_format}
        env |= extra_env or {}
        self.log_path = data_dir / "server.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tabard.cli", "serve", "--port", str(self.port)],
                env=env,
                cwd=data_dir,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.banner = self._read_banner()
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_healthy()

    def _read_banner(self) -> list[str]:
        assert self.process.stdout is not None
        lines = []
        for line in self.process.stdout:
            lines.append(line.rstrip("\n"))
            if "listening on" in line:
                return lines
        raise AssertionError(f"server exited before listening: {lines}")

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("server never became healthy")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.wait()

    def wait(self) -> int:
        """Exit code once the process has ended; closes its output pipe."""
        code = self.process.wait(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code
