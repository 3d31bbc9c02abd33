"""`tabard serve` as an operator runs it: a real process on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

pytestmark = pytest.mark.slow
STARTUP_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    def __init__(
        self, data_dir: Path, log_format: str = "text", extra_env: dict[str, str] | None = None
    ) -> None:
        self.port = _free_port()
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


def _admin_secret(banner: list[str]) -> str:
    secrets = [line.strip() for line in banner if line.strip().startswith("tbd_admin_")]
    assert len(secrets) == 1, banner
    return secrets[0]


class TestServe:
    def test_first_boot_prints_the_admin_secret_once(self, tmp_path: Path) -> None:
        server = Server(tmp_path)
        try:
            secret = _admin_secret(server.banner)
            assert server.banner[-1].endswith(f"listening on http://127.0.0.1:{server.port}")
            created = httpx.post(
                f"{server.url}/v1/orgs",
                json={"id": "acme", "display_name": "Acme"},
                headers={"Authorization": f"Bearer {secret}"},
            )
            assert created.status_code == 201
            assert httpx.get(f"{server.url}/readyz").status_code == 200
        finally:
            assert server.stop() == 0
        assert (tmp_path / ".tabard" / "tabard.db").exists() is False  # data dir was given
        assert (tmp_path / "tabard.db").exists()
        assert oct((tmp_path / "secret.key").stat().st_mode & 0o777) == "0o600"

        again = Server(tmp_path)
        try:
            assert not any("tbd_admin_" in line for line in again.banner)
            orgs = httpx.get(
                f"{again.url}/v1/orgs", headers={"Authorization": f"Bearer {secret}"}
            ).json()
            assert [org["id"] for org in orgs["items"]] == ["acme"]
        finally:
            assert again.stop() == 0

    def test_request_in_flight_at_sigterm_completes(self, tmp_path: Path) -> None:
        server = Server(tmp_path)
        secret = _admin_secret(server.banner)
        body = json.dumps({"id": "inflight", "display_name": "In flight"}).encode()
        head = (
            f"POST /v1/orgs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {secret}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as connection:
            connection.sendall(head + body[:10])
            time.sleep(0.3)  # the server is now inside the request, waiting for the body
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            connection.sendall(body[10:])
            response = connection.recv(65536).decode()
        assert response.startswith("HTTP/1.1 201"), response
        assert server.wait() == 0


_CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
_CALLER_TRACEPARENT = f"00-{_CALLER_TRACE_ID}-00f067aa0ba902b7-01"


class TestLogs:
    def test_json_access_line_carries_request_and_trace_ids(self, tmp_path: Path) -> None:
        server = Server(tmp_path, log_format="json")
        try:
            response = httpx.get(f"{server.url}/v1/orgs/acme", headers={"X-Request-ID": "trace-me"})
            assert response.status_code == 401
            httpx.get(
                f"{server.url}/health",
                headers={"X-Request-ID": "joined", "traceparent": _CALLER_TRACEPARENT},
            )
        finally:
            assert server.stop() == 0
        lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if line]
        access = [line for line in lines if line.get("request_id") == "trace-me"]
        assert access, lines
        line = access[-1]
        assert line["route"] == "/v1/orgs/{org_id}"
        assert line["status"] == 401
        assert len(line["trace_id"]) == 32
        assert line["trace_id"] != "0" * 32
        assert len(line["span_id"]) == 16
        joined = next(line for line in lines if line.get("request_id") == "joined")
        assert joined["trace_id"] == _CALLER_TRACE_ID  # the caller's W3C trace is continued


class _OtlpReceiver(BaseHTTPRequestHandler):
    """Stands in for an OpenTelemetry collector: records what the exporter posts."""

    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return


class TestTracing:
    def test_spans_are_exported_over_otlp_when_configured(self, tmp_path: Path) -> None:
        collector = HTTPServer(("127.0.0.1", 0), _OtlpReceiver)
        thread = threading.Thread(target=collector.serve_forever, daemon=True)
        thread.start()
        endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
        try:
            server = Server(tmp_path, extra_env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
            try:
                httpx.get(f"{server.url}/health")
            finally:
                assert server.stop() == 0
        finally:
            collector.shutdown()
            collector.server_close()
        traces = [body for path, body in _OtlpReceiver.received if path == "/v1/traces"]
        assert traces, _OtlpReceiver.received
        assert b"tabard" in traces[0]
        assert b"GET /health" in b"".join(traces)
