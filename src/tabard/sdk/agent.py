"""`Agent`: the loop an agent process runs against Tabard.

    agent = Agent("https://tabard.example.com", token_file="agent.json",
                  registration_token=os.environ.get("TABARD_REGISTRATION_TOKEN"))

    @agent.action("rotate-key", params_schema={"type": "object", ...}, dangerous=True)
    async def rotate_key(ctx: ActionContext) -> dict:
        return {"api_key": secret(new_key())}   # shown once to the operator, never stored

    asyncio.run(agent.run())

It registers once with a registration token (or reuses its token file), obtains DPoP-bound
access tokens and refreshes them before they expire, declares its actions, heartbeats, and
long-polls for commands, running at most `concurrency` at a time and reporting each result.
Errors back off exponentially with jitter; SIGTERM stops polling, lets running commands finish
(up to `shutdown_grace` seconds) and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tabard import __version__
from tabard.sdk import token_file
from tabard.sdk.dpop import DpopKey
from tabard.sdk.token_file import AgentCredentials, TokenFileError

log = logging.getLogger("tabard.sdk.agent")

SECRET_MARKER = "__tabard_secret__"  # noqa: S105 - the marker's key, not a secret
HANDLER_NOT_FOUND = "ACTION_HANDLER_NOT_FOUND"
ACTION_FAILED = "ACTION_FAILED"
_REFRESH_AT = 0.8  # of a token's lifetime
_BACKOFF_BASE_SECONDS = 0.5
_BACKOFF_CAP_SECONDS = 30.0


def secret(value: str) -> dict[str, str]:
    """Mark a value of an action's output as a one-time secret: the operator's first read of
    the result shows it; Tabard stores, logs and audits "[REDACTED]"."""
    return {SECRET_MARKER: value}


class AgentError(Exception):
    """The agent cannot go on; the message says what the operator should do."""


class CredentialsRejected(AgentError):
    """Tabard refused the stored credentials (revoked, or re-registered elsewhere)."""


class ActionFailed(Exception):
    """Raise from a handler to fail its command with a code of your own."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ActionContext:
    """What a handler gets: the command, its parameters, and whether it is a dry run."""

    command_id: str
    action: str
    params: dict[str, Any]
    prepare: bool  # an ACTION_PREPARE: say what would happen, change nothing


Handler = Callable[[ActionContext], Awaitable[Any]]


@dataclass(frozen=True)
class _Action:
    name: str
    description: str
    params_schema: dict[str, Any]
    dangerous: bool
    requires_prepare: bool
    handler: Handler


@dataclass
class _AccessToken:
    value: str = ""
    refresh_at: float = 0.0
    nonce: str | None = None


@dataclass
class Agent:
    server: str
    token_file: Path | str
    registration_token: str | None = None
    name: str | None = None
    capabilities: list[str] | None = None
    version: str = "0.1.0"
    instance_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    )
    heartbeat_interval: float = 30.0
    poll_wait: float = 30.0
    concurrency: int = 4
    shutdown_grace: float = 30.0
    status: Callable[[], dict[str, Any]] = field(default=dict)
    http: httpx.AsyncClient | None = None

    def __post_init__(self) -> None:
        self.server = self.server.rstrip("/")
        self.token_file = Path(self.token_file).expanduser()
        self._actions: dict[str, _Action] = {}
        self._dpop = DpopKey()
        self._token = _AccessToken()
        self._credentials: AgentCredentials | None = None
        self._running: set[asyncio.Task[None]] = set()

    # Declaring actions -------------------------------------------------------------------------

    def action(
        self,
        name: str,
        *,
        description: str = "",
        params_schema: dict[str, Any] | None = None,
        dangerous: bool = False,
        requires_prepare: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Register the decorated coroutine as the handler of action `name`."""

        def register(handler: Handler) -> Handler:
            schema = params_schema or {"type": "object"}
            self._actions[name] = _Action(
                name, description, schema, dangerous, requires_prepare, handler
            )
            return handler

        return register

    # Running -----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Register (first run) or load the token file, then heartbeat and serve commands until
        `stop` is set or SIGTERM/SIGINT arrives. Raises `AgentError` when it cannot go on
        (credentials rejected: the operator must re-register it)."""
        stop = stop or asyncio.Event()
        self._on_signals(stop)
        owns_http = self.http is None
        self.http = self.http or httpx.AsyncClient(timeout=self.poll_wait + 15)
        try:
            self._credentials = await self._load_or_register()
            await self._with_retries(self._declare_actions, stop)
            loops = [
                asyncio.create_task(self._heartbeat_loop(stop)),
                asyncio.create_task(self._poll_loop(stop)),
            ]
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([*loops, stopped], return_when=asyncio.FIRST_COMPLETED)
            stop.set()
            loops[1].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loops[1]
            await self._finish_running()
            loops[0].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loops[0]
            for task in done - {stopped}:
                task.result()  # a loop that gave up says why
        finally:
            if owns_http:
                await self.http.aclose()
                self.http = None

    def _on_signals(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, stop.set)

    async def _finish_running(self) -> None:
        if not self._running:
            return
        log.info("waiting for %d running command(s)", len(self._running))
        _, pending = await asyncio.wait(self._running, timeout=self.shutdown_grace)
        for task in pending:
            task.cancel()

    # Credentials -------------------------------------------------------------------------------

    async def _load_or_register(self) -> AgentCredentials:
        path = Path(self.token_file)
        stored = token_file.read(path)
        if stored is not None:
            return stored
        if not self.registration_token:
            raise AgentError(
                f"no token file at {path} and no registration token: ask your operator for "
                "one (POST /v1/orgs/{org}/registration-tokens) and set TABARD_REGISTRATION_TOKEN"
            )
        body: dict[str, Any] = {"version": self.version}
        if self.name:
            body["name"] = self.name
        if self.capabilities is not None:
            body["capabilities"] = self.capabilities
        response = await self._http().post(
            f"{self.server}/v1/register",
            json=body,
            headers={"Authorization": f"Bearer {self.registration_token}"},
        )
        if response.status_code != 201:
            raise AgentError(f"registration refused ({response.status_code}): {response.text}")
        answer = response.json()
        credentials = AgentCredentials(
            server=self.server,
            org_id=answer["org_id"],
            agent_id=answer["agent_id"],
            agent_name=answer["agent_name"],
            client_id=answer["client_id"],
            client_secret=answer["client_secret"],
        )
        token_file.write(path, credentials)
        log.info("registered as %s; credentials in %s", credentials.agent_name, path)
        return credentials

    async def _access_token(self) -> str:
        if self._token.value and time.time() < self._token.refresh_at:
            return self._token.value
        credentials = self._credentials
        assert credentials is not None
        assert credentials.client_secret is not None
        url = f"{self.server}/oauth2/token"
        for _ in range(2):  # a second try when the server asks for a DPoP nonce
            response = await self._http().post(
                url,
                data={"grant_type": "client_credentials"},
                auth=(credentials.client_id, credentials.client_secret),
                headers={"DPoP": self._dpop.proof("POST", url, nonce=self._token.nonce)},
            )
            self._token.nonce = response.headers.get("dpop-nonce", self._token.nonce)
            if response.status_code == 400 and response.json().get("error") == "use_dpop_nonce":
                continue
            break
        if response.status_code == 401:
            raise CredentialsRejected(
                f"Tabard refused the credentials in {self.token_file} (revoked, or this agent "
                "was registered again elsewhere): delete the file and start again with a new "
                "registration token"
            )
        response.raise_for_status()
        answer = response.json()
        self._token.value = answer["access_token"]
        self._token.refresh_at = time.time() + answer["expires_in"] * _REFRESH_AT
        return self._token.value

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An API call with the access token and a fresh DPoP proof; once more with a new token
        (or the server's nonce) when the first is refused."""
        url = f"{self.server}{path}"
        response = None
        for _ in range(2):
            token = await self._access_token()
            proof = self._dpop.proof(method, url, access_token=token, nonce=self._token.nonce)
            headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
            response = await self._http().request(method, url, headers=headers, **kwargs)
            if response.status_code != 401:
                return response
            self._token.nonce = response.headers.get("dpop-nonce", self._token.nonce)
            self._token.value = ""  # revoked or expired: ask for a new one
        assert response is not None
        return response

    # Loops -------------------------------------------------------------------------------------

    async def _declare_actions(self) -> None:
        declared = [
            {
                "name": action.name,
                "description": action.description,
                "params_schema": action.params_schema,
                "dangerous": action.dangerous,
                "requires_prepare": action.requires_prepare,
            }
            for action in self._actions.values()
        ]
        response = await self._call("PUT", "/v1/agent/actions", json={"actions": declared})
        response.raise_for_status()

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                await self._heartbeat()
                failures = 0
                delay = self.heartbeat_interval
            except (httpx.HTTPError, AgentError) as exc:
                if isinstance(exc, CredentialsRejected):
                    raise
                failures += 1
                delay = min(self.heartbeat_interval, _backoff(failures))
                log.warning("heartbeat failed (%s); again in %.1f s", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _heartbeat(self) -> None:
        body = {
            "instance_id": self.instance_id,
            "hostname": socket.gethostname(),
            "version": self.version,
            "sdk_version": __version__,
            "status": self.status(),
            "clock": datetime.now(UTC).isoformat(),
        }
        response = await self._call("POST", "/v1/agent/heartbeat", json=body)
        response.raise_for_status()

    async def _poll_loop(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            free = self.concurrency - len(self._running)
            if free <= 0:  # at the limit: wait for a command to finish before asking for more
                await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                commands = await self._poll(free)
                failures = 0
            except (httpx.HTTPError, AgentError) as exc:
                if isinstance(exc, CredentialsRejected):
                    raise
                failures += 1
                delay = _backoff(failures)
                log.warning("polling for commands failed (%s); again in %.1f s", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                continue
            for command in commands:
                task = asyncio.create_task(self._execute(command))
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    async def _poll(self, limit: int) -> list[dict[str, Any]]:
        params = {"instance_id": self.instance_id, "wait": self.poll_wait, "limit": limit}
        response = await self._call("GET", "/v1/agent/commands", params=params)
        response.raise_for_status()
        commands: list[dict[str, Any]] = response.json()
        return commands

    async def _execute(self, command: dict[str, Any]) -> None:
        started = datetime.now(UTC)
        command_id = command["id"]
        await self._report(
            f"/v1/agent/commands/{command_id}/running", {"instance_id": self.instance_id}
        )
        outcome = await self._run_handler(command)
        await self._report(
            f"/v1/agent/commands/{command_id}/result",
            {
                "instance_id": self.instance_id,
                **outcome,
                "started_at": started.isoformat(),
                "finished_at": datetime.now(UTC).isoformat(),
            },
        )

    async def _run_handler(self, command: dict[str, Any]) -> dict[str, Any]:
        action = self._actions.get(command["action"])
        if action is None:
            message = f"this agent has no handler for {command['action']!r}"
            return {"status": "FAILED", "error": {"code": HANDLER_NOT_FOUND, "message": message}}
        context = ActionContext(
            command_id=command["id"],
            action=command["action"],
            params=command.get("params") or {},
            prepare=command["type"] == "ACTION_PREPARE",
        )
        try:
            return {"status": "SUCCEEDED", "output": await action.handler(context)}
        except ActionFailed as exc:
            return {"status": "FAILED", "error": {"code": exc.code, "message": exc.message}}
        except Exception as exc:  # a handler's bug fails its command, not the agent
            log.exception("action %s failed", command["action"])
            return {"status": "FAILED", "error": {"code": ACTION_FAILED, "message": str(exc)}}

    async def _report(self, path: str, body: dict[str, Any]) -> None:
        """Send a command's progress or result, retrying transient failures a few times (a
        409 means the command moved on: expired or taken back; nothing more to say)."""
        for attempt in range(1, 6):
            try:
                response = await self._call("POST", path, json=body)
            except httpx.HTTPError as exc:
                log.warning("reporting to %s failed (%s)", path, exc)
            else:
                if response.status_code < 500 and response.status_code != 429:
                    if response.status_code >= 400:
                        log.warning("report to %s refused: %s", path, response.text)
                    return
            await asyncio.sleep(_backoff(attempt))

    async def _with_retries(self, call: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
        for attempt in range(1, 1000):
            try:
                await call()
                return
            except httpx.HTTPError as exc:
                delay = _backoff(attempt)
                log.warning("%s failed (%s); again in %.1f s", call.__name__, exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                if stop.is_set():
                    return

    def _http(self) -> httpx.AsyncClient:
        assert self.http is not None, "the agent is not running"
        return self.http


def _backoff(attempt: int) -> float:
    """Exponential, capped, with full jitter (so a fleet does not retry in lockstep)."""
    ceiling = min(_BACKOFF_CAP_SECONDS, _BACKOFF_BASE_SECONDS * 2 ** min(attempt, 16))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography


def from_environment(**overrides: Any) -> Agent:
    """An `Agent` configured by `TABARD_URL`, `TABARD_TOKEN_FILE` and, for the first run,
    `TABARD_REGISTRATION_TOKEN`."""
    settings: dict[str, Any] = {
        "server": os.environ.get("TABARD_URL", "http://127.0.0.1:8080"),
        "token_file": os.environ.get("TABARD_TOKEN_FILE", "tabard-agent.json"),
        "registration_token": os.environ.get("TABARD_REGISTRATION_TOKEN") or None,
    }
    return Agent(**{**settings, **overrides})


__all__ = [
    "ActionContext",
    "ActionFailed",
    "Agent",
    "AgentError",
    "CredentialsRejected",
    "TokenFileError",
    "from_environment",
    "secret",
]
