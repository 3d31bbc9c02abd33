"""`tabard serve` as an operator runs it: a real process on loopback."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from typer.testing import CliRunner

from tabard.cli.main import app
from tests.support.server import Server

pytestmark = pytest.mark.slow


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


class TestWorkers:
    def test_several_workers_need_a_shared_kv_store(self, tmp_path: Path) -> None:
        env = {"TABARD_DATA_DIR": str(tmp_path), "TABARD_KV_BACKEND": "memory"}
        result = CliRunner().invoke(app, ["serve", "--workers", "2"], env=env)
        assert result.exit_code == 2
        assert "TABARD_KV_BACKEND=redis" in result.output
        assert not (tmp_path / "tabard.db").exists()  # refused before touching anything
