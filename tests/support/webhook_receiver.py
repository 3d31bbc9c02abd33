"""A webhook receiver on a real loopback HTTP server (uvicorn in a thread), for events tests.

It checks every request's signature with the Standard Webhooks reference library
(`standardwebhooks`), an implementation independent of Tabard's, and answers as it is told:
a queue of status codes (then 204), optionally after a delay (a slow or timing-out receiver).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified_by: list[str]  # which secrets' signatures matched
    at: float = field(default_factory=time.monotonic)

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    def __init__(self, path: str = "/hook") -> None:
        self.secrets: list[str] = []
        self.statuses: list[int] = []
        self.delay_seconds = 0.0
        self.received: list[Received] = []
        self._lock = threading.Lock()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}{path}"
        config = uvicorn.Config(
            Starlette(routes=[Route(path, self._hook, methods=["POST"])]),
            lifespan="off",
            ws="none",
            http="h11",
            log_level="warning",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [listener]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "webhook receiver did not start"
            time.sleep(0.01)

    def answer(self, *statuses: int, delay_seconds: float = 0.0) -> None:
        """Answer the next requests with `statuses` (then 204), each after `delay_seconds`."""
        with self._lock:
            self.statuses = list(statuses)
            self.delay_seconds = delay_seconds

    def verified(self) -> list[Received]:
        with self._lock:
            return [item for item in self.received if item.verified_by]

    def ids(self) -> list[str]:
        return [item.id for item in self.verified()]

    async def wait_for(self, count: int, seconds: float = 10.0) -> list[Received]:
        """Wait until `count` verified requests arrived; all of them."""
        deadline = time.monotonic() + seconds
        while len(self.verified()) < count:
            assert time.monotonic() < deadline, (
                f"{len(self.verified())} of {count} webhooks arrived: {self.received}"
            )
            await asyncio.sleep(0.01)
        return self.verified()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        headers = {name.lower(): value for name, value in request.headers.items()}
        with self._lock:
            secrets = list(self.secrets)
            status = self.statuses.pop(0) if self.statuses else 204
            delay = self.delay_seconds
        matched = [secret for secret in secrets if _signed_by(secret, headers, body)]
        with self._lock:
            self.received.append(Received(headers, body, matched))
        if delay:
            await asyncio.sleep(delay)
        content = b"" if status in (204, 304) else f"answer {status}".encode()
        return Response(content, status_code=status)


def _signed_by(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Whether one of the request's signatures is `secret`'s, by the reference library.

    The library's `verify` also insists the timestamp is within five minutes of the wall
    clock; tests move Tabard's clock by hours, so the signature is checked on its own here
    (the same HMAC the library computes) and the timestamp by the tests."""
    try:
        timestamp = int(headers["webhook-timestamp"])
        expected = (
            Webhook(secret)
            .sign(headers["webhook-id"], datetime.fromtimestamp(timestamp, tz=UTC), body.decode())
            .split(",", 1)[1]
        )
    except (KeyError, ValueError):
        return False
    offered = [part.split(",", 1)[-1] for part in headers.get("webhook-signature", "").split()]
    return any(base64.b64decode(sig) == base64.b64decode(expected) for sig in offered)
