"""The SDK's agent loop against a real server on loopback, as an operator runs it.

The server is uvicorn in this process, on a clock the test moves (so "offline after 90 s" takes
no 90 s); the agent is `examples/worker_agent.py` in a process of its own, configured only by
its environment, exactly as the examples README tells an operator to start it.

register → heartbeat → online → commands execute (a one-time secret shown once, a handler
that does not exist) → SIGTERM stops it cleanly → offline after the threshold → restarted from
its token file without registering again → its credential revoked: it stops and says to
re-register; a token file readable by others is refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tabard.api.app import build_runtime, create_app
from tabard.api.http_protocol import CoalescingHttpToolsProtocol
from tabard.core.config import Settings, load_settings
from tabard.core.migrations import upgrade
from tabard.tenancy.authentication import ensure_admin_secret
from tests.conftest import ADMIN, ADMIN_SECRET
from tests.support.server import free_port

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "worker_agent.py"
WAIT_SECONDS = 30.0


class MovableClock:
    """The real clock plus an offset the test can grow."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def timestamp(self) -> float:
        return self.now().timestamp()


@dataclass
class Deployment:
    url: str
    clock: MovableClock
    http: httpx.AsyncClient
    workdir: Path

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, path, headers=ADMIN, **kwargs)
        assert response.status_code in (200, 201, 204), (path, response.text)
        return response.json() if response.content else None


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    port = free_port()
    settings: Settings = load_settings(
        data_dir=tmp_path,
        public_url=f"http://127.0.0.1:{port}",
        log_format="text",
        log_level="warning",
        heartbeat_flush_seconds=0.2,
        command_sweep_seconds=1,
    )
    await upgrade(settings)
    clock = MovableClock()
    runtime = build_runtime(settings, clock=clock)
    async with runtime.database.unit_of_work() as session:
        await ensure_admin_secret(session, ADMIN_SECRET, clock)
    app = create_app(settings, runtime=runtime)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        http=CoalescingHttpToolsProtocol,  # as `tabard serve` runs it
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    await _until(lambda: server.started)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        yield Deployment(f"http://127.0.0.1:{port}", clock, http, tmp_path)
    server.should_exit = True
    await serving


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(600):
        if condition():
            return
        await asyncio.sleep(0.05)  # uvicorn offers no event to wait on
    raise AssertionError("the server did not start")


def start_agent(deployment: Deployment, registration_token: str | None) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TABARD_")}
    env |= {
        "TABARD_URL": deployment.url,
        "TABARD_TOKEN_FILE": str(deployment.workdir / "agent.json"),
        "HEARTBEAT_INTERVAL": "0.3",
    }
    if registration_token is not None:
        env["TABARD_REGISTRATION_TOKEN"] = registration_token
    return subprocess.Popen(
        [sys.executable, str(EXAMPLE)],
        env=env,
        cwd=deployment.workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


async def wait_exit(process: subprocess.Popen[str]) -> tuple[int, str]:
    code = await asyncio.to_thread(process.wait, WAIT_SECONDS)
    assert process.stderr is not None
    with process.stderr:
        return code, process.stderr.read()


def stop_for_good(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(WAIT_SECONDS)
    if process.stderr is not None:
        process.stderr.close()


async def test_an_agent_process_lives_its_whole_life(deployment: Deployment) -> None:
    await deployment.ok("POST", "/v1/orgs", json={"id": "acme", "display_name": "Acme"})
    token = await deployment.ok(
        "POST",
        "/v1/orgs/acme/registration-tokens",
        json={"label": "workers", "preset": {"name_pattern": "worker"}},
    )
    process = start_agent(deployment, token["token"])
    try:
        agent_id = await _registered_and_online(deployment)
        await _commands_execute(deployment, agent_id)
        await _unknown_handler_fails_its_command(deployment, agent_id)
        process.send_signal(signal.SIGTERM)
        code, errors = await wait_exit(process)
        assert code == 0, errors
    finally:
        stop_for_good(process)
    await _offline_after_the_threshold(deployment, agent_id)
    await _restart_reuses_the_token_file(deployment, agent_id)


async def _registered_and_online(deployment: Deployment) -> str:
    agents: list[dict[str, Any]] = []

    async def registered() -> bool:
        agents[:] = (await deployment.ok("GET", "/v1/orgs/acme/agents"))["items"]
        return bool(agents)

    await eventually(registered, "the agent registered")
    assert [agent["name"] for agent in agents] == ["worker"]
    agent_id: str = agents[0]["id"]
    token_file = deployment.workdir / "agent.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

    async def online() -> bool:
        status = await deployment.ok("GET", f"/v1/orgs/acme/agents/{agent_id}/status")
        return bool(status["presence"] == "online")

    await eventually(online, "the agent is online")
    status = await deployment.ok("GET", f"/v1/orgs/acme/agents/{agent_id}/status")
    assert status["instances"][0]["sdk_version"]
    actions = await deployment.ok("GET", f"/v1/orgs/acme/agents/{agent_id}/actions")
    assert {action["name"] for action in actions} == {"echo", "rotate-api-key", "purge-cache"}
    return agent_id


async def _command(deployment: Deployment, agent_id: str, **body: Any) -> dict[str, Any]:
    """Create a command and wait until it has finished."""
    base = f"/v1/orgs/acme/agents/{agent_id}/commands"
    created = (await deployment.ok("POST", base, json=body))[0]
    finished: dict[str, Any] = {}

    async def done() -> bool:
        response = await deployment.http.get(f"{base}/{created['id']}", headers=ADMIN)
        finished.update(response.json())
        return finished["state"] in ("SUCCEEDED", "FAILED")

    await eventually(done, f"command {body['action']} finished")
    return finished


async def _commands_execute(deployment: Deployment, agent_id: str) -> None:
    echoed = await _command(deployment, agent_id, action="echo", params={"message": "hi"})
    assert echoed["state"] == "SUCCEEDED", echoed
    assert echoed["output"] == {"echo": "hi"}
    assert echoed["started_at"]
    assert echoed["finished_at"]

    rotated = await _command(deployment, agent_id, action="rotate-api-key")
    # The poll that saw it finish was the first read: the clear value went to it, once.
    assert rotated["state"] == "SUCCEEDED", rotated
    assert rotated["output"]["api_key"].startswith("sk_")
    again = await deployment.ok("GET", f"/v1/orgs/acme/agents/{agent_id}/commands/{rotated['id']}")
    assert again["output"] == {"api_key": "[REDACTED]", "rotated": True}

    prepared = await _command(
        deployment, agent_id, action="purge-cache", type="ACTION_PREPARE", params={"days": 3}
    )
    assert prepared["output"] == {"would_delete": 30}
    purged = await _command(
        deployment,
        agent_id,
        action="purge-cache",
        params={"days": 3},
        prepare_command_id=prepared["id"],
    )
    assert purged["output"] == {"deleted": 30}


async def _unknown_handler_fails_its_command(deployment: Deployment, agent_id: str) -> None:
    """An action declared (here by another instance's release) that this process lacks."""
    stored = json.loads((deployment.workdir / "agent.json").read_text())
    token = await deployment.http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(stored["client_id"], stored["client_secret"]),
    )
    declared = await deployment.http.put(
        "/v1/agent/actions",
        json={"actions": [{"name": "echo"}, {"name": "reindex"}]},
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
    )
    assert declared.status_code == 200, declared.text
    failed = await _command(deployment, agent_id, action="reindex")
    assert failed["state"] == "FAILED"
    assert failed["error"]["code"] == "ACTION_HANDLER_NOT_FOUND"


async def _offline_after_the_threshold(deployment: Deployment, agent_id: str) -> None:
    await asyncio.sleep(0.5)  # the last heartbeat is flushed
    deployment.clock.offset += timedelta(seconds=91)
    status = await deployment.ok("GET", f"/v1/orgs/acme/agents/{agent_id}/status")
    assert status["presence"] == "offline", status
    # The agent signs its DPoP proofs with its own clock (their iat must be within a minute of
    # the server's): put the server back in step with it before it starts again.
    deployment.clock.offset = timedelta()


async def _restart_reuses_the_token_file(deployment: Deployment, agent_id: str) -> None:
    process = start_agent(deployment, registration_token=None)  # the token is used up anyway
    try:

        async def online_again() -> bool:
            status = await deployment.ok("GET", f"/v1/orgs/acme/agents/{agent_id}/status")
            return bool(status["presence"] == "online")

        await eventually(online_again, "the restarted agent is online")
        agents = (await deployment.ok("GET", "/v1/orgs/acme/agents"))["items"]
        assert [agent["id"] for agent in agents] == [agent_id]  # no second registration
        credentials = await deployment.ok("GET", f"/v1/orgs/acme/agents/{agent_id}/credentials")
        await deployment.ok(
            "POST",
            f"/v1/orgs/acme/agents/{agent_id}/credentials/{credentials[0]['id']}/revoke",
        )
        code, errors = await wait_exit(process)
        assert code != 0
        assert "re-register" in errors or "registration token" in errors, errors
    finally:
        stop_for_good(process)


async def test_a_token_file_readable_by_others_is_refused(deployment: Deployment) -> None:
    token_file = deployment.workdir / "agent.json"
    token_file.write_text("{}")
    token_file.chmod(0o644)
    process = start_agent(deployment, registration_token=None)
    code, errors = await wait_exit(process)
    assert code != 0
    assert "chmod 600" in errors, errors
