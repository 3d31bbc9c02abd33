"""`tabard events` as an operator runs it: a real `tabard serve` on loopback, the command in a
process of its own configured by TABARD_URL and TABARD_API_KEY, its output read line by line.

`--once` prints the backlog and exits; following (the default) prints events as they happen
and, when the server goes away and comes back, reconnects with the last id it printed, so the
events of the gap are printed once each.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from tests.conftest import ADMIN, ADMIN_SECRET
from tests.support.server import Server, free_port

pytestmark = pytest.mark.slow

SERVER_ENV = {"TABARD_ADMIN_SECRET": ADMIN_SECRET}
WAIT_SECONDS = 15.0
RECONNECT_SECONDS = 40.0  # the server's restart plus the command's backoff (0.5, 1, 2, 5, 10 s)
# time, type (padded), org, subject, data: as `tabard events` prints an event.
LINE = re.compile(
    r"^(?P<time>\S+)  (?P<type>\S+) +(?P<org>\S+)  (?P<subject>\S+)  (?P<data>\{.*\})$"
)


def cli_env(server: Server | None, token: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TABARD_")}
    if server is not None:
        env["TABARD_URL"] = server.url
    if token is not None:
        env["TABARD_API_KEY"] = token
    return env


def run_events(
    server: Server | None, token: str | None, *args: str, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`tabard events --once …` to completion."""
    env = cli_env(server, token)
    if url is not None:
        env["TABARD_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "tabard.cli", "events", "--once", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def fields(line: str) -> dict[str, str]:
    """A printed event line's parts."""
    match = LINE.match(line)
    assert match, line
    return match.groupdict()


def printed(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def said(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


class Tail:
    """The lines of a running process's stream, read in a thread as they come."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def next(self, seconds: float = WAIT_SECONDS) -> str:
        try:
            line = self.lines.get(timeout=seconds)
        except queue.Empty:
            raise AssertionError(f"no line within {seconds} s; so far {self.seen}") from None
        self.seen.append(line)
        return line

    def until(self, text: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while text not in said(" ".join(self.seen)):
            self.next(max(deadline - time.monotonic(), 0.01))

    def rest(self) -> list[str]:
        """What else came, once the stream has ended."""
        self.thread.join(timeout=WAIT_SECONDS)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.seen


class Following:
    """`tabard events` (following) in the background."""

    def __init__(self, server: Server, token: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tabard.cli", "events", *args],
            env=cli_env(server, token),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.out = Tail(self.process.stdout)
        self.err = Tail(self.process.stderr)

    def event(self, seconds: float = WAIT_SECONDS) -> dict[str, Any]:
        envelope: dict[str, Any] = json.loads(self.out.next(seconds))
        return envelope

    def interrupt(self) -> int:
        """Ctrl+C; the exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=WAIT_SECONDS)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT_SECONDS)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def call(server: Server, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{server.url}{path}", headers=ADMIN, timeout=10, **kwargs)
    assert response.status_code in (200, 201), (path, response.text)
    return response.json()


def new_org(server: Server, org_id: str) -> str:
    """Org `org_id` and an API key of it (its secret)."""
    call(server, "POST", "/v1/orgs", json={"id": org_id, "display_name": org_id.title()})
    key = call(server, "POST", f"/v1/orgs/{org_id}/keys", json={"name": "cli"})
    secret: str = key["secret"]
    return secret


def new_agent(server: Server, org_id: str, name: str) -> dict[str, Any]:
    agent: dict[str, Any] = call(server, "POST", f"/v1/orgs/{org_id}/agents", json={"name": name})
    return agent


def published(server: Server, token: str, count: int, **params: Any) -> list[dict[str, Any]]:
    """The last `count` events `token` may see, once the server's relay has published them."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        response = httpx.get(
            f"{server.url}/v1/events",
            params={"follow": "false", "last": count, **params},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        events = [
            json.loads(line.removeprefix("data: "))
            for line in response.text.splitlines()
            if line.startswith("data: ")
        ]
        if len(events) >= count:
            return events
        assert time.monotonic() < deadline, f"only {len(events)} of {count} events published"
        time.sleep(0.1)


class Deployment:
    """A server with org acme (its key, agents a, b and c) and org globex (agent g)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.key = new_org(server, "acme")
        self.agents = [new_agent(server, "acme", name) for name in ("a", "b", "c")]
        new_org(server, "globex")
        new_agent(server, "globex", "g")
        # org.created, org.api_key.created, three agent.created
        self.events = published(server, self.key, 5)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    server = Server(tmp_path_factory.mktemp("events-cli"), extra_env=SERVER_ENV)
    try:
        yield Deployment(server)
    finally:
        assert server.stop() == 0


class TestOnce:
    def test_each_event_is_a_line_of_time_type_org_subject_and_data(
        self, deployment: Deployment
    ) -> None:
        lines = [fields(line) for line in printed(run_events(deployment.server, deployment.key))]
        assert len(lines) == len(deployment.events) == 5
        for line, event in zip(lines, deployment.events, strict=True):
            assert line["time"] == event["time"]
            assert line["type"] == event["type"]
            assert line["org"] == "acme"
            assert line["subject"] == event["subject"]
            assert json.loads(line["data"]) == event["data"]
        assert [line["type"] for line in lines] == [
            "org.created",
            "org.api_key.created",
            "agent.created",
            "agent.created",
            "agent.created",
        ]

    def test_json_prints_one_envelope_per_line(self, deployment: Deployment) -> None:
        lines = printed(run_events(deployment.server, deployment.key, "--json"))
        assert [json.loads(line) for line in lines] == deployment.events

    def test_type_keeps_only_the_matching_events(self, deployment: Deployment) -> None:
        lines = printed(
            run_events(deployment.server, deployment.key, "--json", "--type", "agent.*")
        )
        shown = [json.loads(line) for line in lines]
        assert [event["data"]["agent_name"] for event in shown] == ["a", "b", "c"]
        both = printed(
            run_events(
                deployment.server,
                deployment.key,
                "--json",
                "-t",
                "org.created",
                "-t",
                "org.api_key.*",
            )
        )
        assert [json.loads(line)["type"] for line in both] == [
            "org.created",
            "org.api_key.created",
        ]

    def test_last_starts_that_many_events_back(self, deployment: Deployment) -> None:
        lines = printed(run_events(deployment.server, deployment.key, "--json", "--last", "1"))
        assert [json.loads(line) for line in lines] == deployment.events[-1:]

    def test_after_starts_after_that_event(self, deployment: Deployment) -> None:
        after = deployment.events[2]["id"]
        lines = printed(run_events(deployment.server, deployment.key, "--json", "--after", after))
        assert [json.loads(line) for line in lines] == deployment.events[3:]

    def test_an_org_key_sees_only_its_org_and_the_admin_may_pick_one(
        self, deployment: Deployment
    ) -> None:
        globex = printed(
            run_events(deployment.server, ADMIN_SECRET, "--json", "--org", "globex", "--last", "50")
        )
        assert [(json.loads(line)["org"], json.loads(line)["type"]) for line in globex] == [
            ("globex", "org.created"),
            ("globex", "org.api_key.created"),
            ("globex", "agent.created"),
        ]
        mine = printed(run_events(deployment.server, deployment.key, "--json", "--last", "50"))
        assert {json.loads(line)["org"] for line in mine} == {"acme"}

    def test_a_bad_key_fails_with_the_servers_problem(self, deployment: Deployment) -> None:
        result = run_events(deployment.server, "tbd_key_not-a-real-key")
        assert result.returncode == 1, result
        assert result.stdout == ""
        assert said(result.stderr).startswith("error: 401 INVALID_CREDENTIALS"), result.stderr

    def test_an_unknown_after_fails_with_the_servers_problem(self, deployment: Deployment) -> None:
        result = run_events(deployment.server, deployment.key, "--after", "no-such-event")
        assert result.returncode == 1, result
        assert "400 INVALID_LAST_EVENT_ID" in said(result.stderr), result.stderr

    def test_without_a_key_it_says_what_to_set(self, deployment: Deployment) -> None:
        result = run_events(deployment.server, None)
        assert result.returncode == 2, result
        assert "TABARD_API_KEY" in result.stderr

    def test_an_unreachable_server_fails(self) -> None:
        result = run_events(None, "tbd_key_whatever", url=f"http://127.0.0.1:{free_port()}")
        assert result.returncode == 1, result
        assert said(result.stderr).startswith("error: cannot read"), result.stderr


class TestFollow:
    def test_lines_appear_as_events_happen(self, deployment: Deployment) -> None:
        key = new_org(deployment.server, "initech")
        published(deployment.server, key, 2)
        cli = Following(deployment.server, key, "--type", "agent.*")
        try:
            cli.err.until("following", WAIT_SECONDS)  # the command has started and connected
            for name in ("live-1", "live-2"):
                agent = new_agent(deployment.server, "initech", name)
                line = fields(cli.out.next())
                assert (line["type"], line["org"], line["subject"]) == (
                    "agent.created",
                    "initech",
                    agent["id"],
                )
            assert cli.interrupt() == 0
        finally:
            cli.close()
        assert cli.out.rest() == cli.out.seen[:2]

    def test_it_reconnects_after_a_restart_and_prints_the_gap_once(self, tmp_path: Path) -> None:
        server = Server(tmp_path, extra_env=SERVER_ENV)
        cli: Following | None = None
        try:
            call(server, "POST", "/v1/orgs", json={"id": "acme", "display_name": "Acme"})
            published(server, ADMIN_SECRET, 1, org="acme")
            cli = Following(server, ADMIN_SECRET, "--json", "--last", "1")
            assert cli.event()["type"] == "org.created"  # the backlog
            new_agent(server, "acme", "before")
            assert cli.event()["data"]["agent_name"] == "before"

            assert server.stop() == 0
            cli.err.until("reconnecting", WAIT_SECONDS)
            # While the server is down the platform's signing key is rotated (straight in its
            # database): the event is published once the server is back, and so is the agent
            # made before the command got to reconnect.
            rotate_signing_key_offline(tmp_path)
            server = Server(tmp_path, extra_env=SERVER_ENV, port=server.port)
            new_agent(server, "acme", "after-restart")
            gap = [cli.event(RECONNECT_SECONDS), cli.event()]
            new_agent(server, "acme", "live")
            live = cli.event()
            assert cli.interrupt() == 0
        finally:
            if cli is not None:
                cli.close()
            server.stop()
        assert [event["type"] for event in gap] == ["signing_key.rotated", "agent.created"]
        assert gap[1]["data"]["agent_name"] == "after-restart"
        assert live["data"]["agent_name"] == "live"
        shown = [json.loads(line) for line in cli.out.rest()]
        assert [event["type"] for event in shown] == [
            "org.created",
            "agent.created",
            "signing_key.rotated",
            "agent.created",
            "agent.created",
        ]
        assert len({event["id"] for event in shown}) == len(shown)
        notices = said("\n".join(cli.err.rest()))
        assert "reconnecting" in notices
        assert notices.count(f"connected to {server.url}/v1/events; following") == 2

    @pytest.mark.parametrize(
        ("types", "expected"),
        [
            # Events existed: the stream announced the newest as the place to resume.
            ((), ["signing_key.rotated", "agent.created"]),
            # None matched yet: everything matching on reconnection is new.
            (("--type", "agent.*"), ["agent.created"]),
        ],
    )
    def test_a_drop_before_any_event_loses_nothing(
        self, tmp_path: Path, types: tuple[str, ...], expected: list[str]
    ) -> None:
        server = Server(tmp_path, extra_env=SERVER_ENV)
        cli: Following | None = None
        try:
            call(server, "POST", "/v1/orgs", json={"id": "acme", "display_name": "Acme"})
            published(server, ADMIN_SECRET, 1, org="acme")
            cli = Following(server, ADMIN_SECRET, "--json", "--last", "0", *types)
            cli.err.until("following", WAIT_SECONDS)  # connected, nothing printed
            assert server.stop() == 0
            cli.err.until("reconnecting", WAIT_SECONDS)
            rotate_signing_key_offline(tmp_path)
            server = Server(tmp_path, extra_env=SERVER_ENV, port=server.port)
            new_agent(server, "acme", "after-restart")
            gap = [cli.event(RECONNECT_SECONDS) for _ in expected]
            assert cli.interrupt() == 0
        finally:
            if cli is not None:
                cli.close()
            server.stop()
        assert [event["type"] for event in gap] == expected
        assert gap[-1]["data"]["agent_name"] == "after-restart"
        assert len(cli.out.rest()) == len(expected)


def rotate_signing_key_offline(data_dir: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TABARD_")}
    env["TABARD_DATA_DIR"] = str(data_dir)
    result = subprocess.run(
        [sys.executable, "-m", "tabard.cli", "keys", "rotate"],
        env=env,
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
