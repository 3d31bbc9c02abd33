"""A webhook receiver for the events benchmark: raw asyncio HTTP/1.1 keep-alive, no framework.

    python bench/receiver.py --port 0 --slow-prefix /slow --slow-seconds 15

It answers every POST with 204 at once, except under `--slow-prefix`, where it waits
`--slow-seconds` first (past Tabard's 10 s timeout, so those attempts time out). For each POST
it records the path, the `webhook-id` header, the event `time` of the JSON body and its own
wall time on receipt. Control requests:

- `GET /stats`: JSON with, per path, the count, unique ids, duplicates and the
  commit-to-receive latencies in ms (receive wall time - event time); `?latencies=0` leaves
  the latencies out (cheap enough to poll);
- `POST /reset`: forget everything;
- `POST /release`: answer the slow requests still waiting at once (so a sender that shuts
  down need not wait them out).

It prints "listening on <port>" once it accepts connections, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MAX_HEAD_BYTES = 64 * 1024
NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass
class PathStats:
    """What one path received."""

    count: int = 0
    ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    first_at: float = 0.0
    last_at: float = 0.0
    unparsed: int = 0  # bodies without a readable event time

    def add(self, webhook_id: str, latency_ms: float | None, at: float) -> None:
        self.count += 1
        if webhook_id in self.ids:
            self.duplicates += 1
        else:
            self.ids.add(webhook_id)
        if latency_ms is None:
            self.unparsed += 1
        else:
            self.latencies_ms.append(round(latency_ms, 3))
        self.first_at = at if self.count == 1 else min(self.first_at, at)
        self.last_at = max(self.last_at, at)


class Receiver:
    """The state shared by every connection."""

    def __init__(self, slow_prefix: str, slow_seconds: float) -> None:
        self.slow_prefix = slow_prefix
        self.slow_seconds = slow_seconds
        self.paths: dict[str, PathStats] = {}
        self.connections_opened = 0
        self.released = asyncio.Event()  # set by POST /release: slow answers go out at once

    def record(self, path: str, headers: dict[str, str], body: bytes) -> None:
        at = time.time()
        latency_ms = None
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            event_time = json.loads(body)["time"]
            latency_ms = (at - datetime.fromisoformat(event_time).timestamp()) * 1000
        stats = self.paths.get(path)
        if stats is None:
            stats = self.paths[path] = PathStats()
        stats.add(headers.get("webhook-id", ""), latency_ms, at)

    def stats(self, latencies: bool = True) -> dict[str, Any]:
        paths = {
            path: {
                "count": s.count,
                "unique": len(s.ids),
                "duplicates": s.duplicates,
                "unparsed": s.unparsed,
                "first_at": s.first_at,
                "last_at": s.last_at,
                **({"latencies_ms": s.latencies_ms} if latencies else {}),
            }
            for path, s in self.paths.items()
        }
        return {
            "paths": paths,
            "count": sum(s.count for s in self.paths.values()),
            "unique": sum(len(s.ids) for s in self.paths.values()),
            "duplicates": sum(s.duplicates for s in self.paths.values()),
            "connections_opened": self.connections_opened,
        }

    def reset(self) -> None:
        self.paths.clear()
        self.connections_opened = 0
        self.released = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One keep-alive connection: requests one after another until the peer closes."""
        self.connections_opened += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                request_line, *lines = head.decode("latin-1").split("\r\n")
                parts = request_line.split(" ")
                if len(parts) != 3:
                    writer.write(BAD_REQUEST)
                    return
                method, target, _ = parts
                headers = {}
                for line in lines:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = b""
                length = int(headers.get("content-length") or 0)
                if length:
                    body = await reader.readexactly(length)
                path, _, query = target.partition("?")
                if not await self.answer(method, path, query, headers, body, writer):
                    return
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # cancelled: the receiver is stopping while a slow answer waits
        finally:
            writer.close()

    async def answer(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Write the response; False when the connection should close."""
        if method == "GET" and path == "/stats":
            latencies = "latencies=0" not in query.split("&")
            payload = json.dumps(self.stats(latencies), separators=(",", ":")).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
        elif method == "POST" and path == "/reset":
            self.reset()
            writer.write(NO_CONTENT)
        elif method == "POST" and path == "/release":
            self.released.set()
            writer.write(NO_CONTENT)
        elif method == "POST":
            self.record(path, headers, body)
            if self.slow_prefix and path.startswith(self.slow_prefix):
                released = self.released
                with contextlib.suppress(TimeoutError):  # the sender gave up long ago
                    await asyncio.wait_for(released.wait(), self.slow_seconds)
            writer.write(NO_CONTENT)
        else:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        return True


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--slow-prefix", default="", help="paths answered after --slow-seconds")
    parser.add_argument("--slow-seconds", type=float, default=15.0)
    return parser.parse_args()


async def main() -> None:
    args = parse_args()
    receiver = Receiver(args.slow_prefix, args.slow_seconds)
    server = await asyncio.start_server(receiver.serve, args.host, args.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"listening on {port}", flush=True)
    await stop.wait()
    server.close()  # connections still held (slow paths) are cancelled with the loop


def run() -> None:
    try:
        import uvloop  # the cheaper loop, as Tabard's own server runs on
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
    sys.exit(0)


if __name__ == "__main__":
    run()
