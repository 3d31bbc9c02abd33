"""One load-generator process: N keep-alive HTTP/1.1 connections on a raw asyncio loop.

Reads its job as JSON on stdin (so secrets stay out of argv), prints its figures as JSON on
stdout. All processes of a run share an absolute start time on the system-wide monotonic clock
(CLOCK_MONOTONIC on Linux), so their warm-up and measurement windows line up. Every loop is
bounded by a deadline and by a request cap, so it always stops.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

REQUEST_TIMEOUT_S = 10.0
MAX_REQUESTS_PER_CONNECTION = 2_000_000
RECONNECT_PAUSE_S = 0.05


@dataclass(frozen=True)
class Job:
    """What to load and when: the measurement window is [measure_from, measure_until)."""

    host: str
    port: int
    request: bytes
    connections: int
    start_at: float
    measure_from: float
    measure_until: float


@dataclass
class Tally:
    """Figures of the measurement window, shared by the connections of this process."""

    latencies_us: list[int] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    transport_errors: int = 0
    cpu_s: float = 0.0

    def record(self, status: int, started: float, finished: float, window: Job) -> None:
        """Count one response if it both started and finished inside the window."""
        if started < window.measure_from or finished >= window.measure_until:
            return
        self.latencies_us.append(round((finished - started) * 1_000_000))
        key = str(status)
        self.statuses[key] = self.statuses.get(key, 0) + 1

    def count_transport_error(self, at: float, window: Job) -> None:
        """Count a failed connect or exchange that happened inside the window."""
        if window.measure_from <= at < window.measure_until:
            self.transport_errors += 1


def build_request(host: str, port: int, path: str, headers: dict[str, str]) -> bytes:
    """The raw bytes of one keep-alive GET request."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return its status and whether the server keeps the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        await read_chunked(reader)
    else:
        await reader.read()
        return status, False
    return status, headers.get("connection") != "close"


async def read_chunked(reader: asyncio.StreamReader) -> None:
    """Consume a chunked body, trailers included."""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return
        await reader.readexactly(size + 2)


async def connection_loop(job: Job, tally: Tally) -> None:
    """Send requests back to back on one connection until the window ends."""
    stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        for _ in range(MAX_REQUESTS_PER_CONNECTION):
            if time.monotonic() >= job.measure_until:
                return
            if stream is None:
                stream = await connect(job, tally)
                if stream is None:
                    continue
            keep = await one_request(job, tally, *stream)
            if not keep:
                stream[1].close()
                stream = None
    finally:
        if stream is not None:
            stream[1].close()


async def connect(
    job: Job, tally: Tally
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """Open a connection, or count a transport error and pause briefly (None)."""
    try:
        return await asyncio.wait_for(
            asyncio.open_connection(job.host, job.port), REQUEST_TIMEOUT_S
        )
    except (OSError, TimeoutError):
        tally.count_transport_error(time.monotonic(), job)
        await asyncio.sleep(RECONNECT_PAUSE_S)
        return None


async def one_request(
    job: Job, tally: Tally, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> bool:
    """Send one request and record it; return whether the connection is still usable."""
    started = time.monotonic()
    try:
        writer.write(job.request)
        status, keep = await asyncio.wait_for(read_response(reader), REQUEST_TIMEOUT_S)
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
        tally.count_transport_error(started, job)
        await asyncio.sleep(RECONNECT_PAUSE_S)
        return False
    tally.record(status, started, time.monotonic(), job)
    return keep


async def run(job: Job) -> Tally:
    """Wait for the shared start time, then drive every connection of this process."""
    await asyncio.sleep(max(0.0, job.start_at - time.monotonic()))
    tally = Tally()
    cpu_before = time.process_time()
    await asyncio.gather(*(connection_loop(job, tally) for _ in range(job.connections)))
    tally.cpu_s = time.process_time() - cpu_before
    return tally


def parse_job(raw: dict[str, Any]) -> Job:
    """Build a `Job` from the JSON the runner sends."""
    start_at = float(raw["start_at"])
    measure_from = start_at + float(raw["warmup_s"])
    return Job(
        host=raw["host"],
        port=int(raw["port"]),
        request=build_request(raw["host"], int(raw["port"]), raw["path"], raw.get("headers", {})),
        connections=int(raw["connections"]),
        start_at=start_at,
        measure_from=measure_from,
        measure_until=measure_from + float(raw["duration_s"]),
    )


def main() -> None:
    """Read the job from stdin, run it, print the tally as JSON."""
    job = parse_job(json.load(sys.stdin))
    tally = asyncio.run(run(job))
    json.dump(
        {
            "latencies_us": tally.latencies_us,
            "statuses": tally.statuses,
            "transport_errors": tally.transport_errors,
            "cpu_s": round(tally.cpu_s, 3),
        },
        sys.stdout,
        separators=(",", ":"),
    )


if __name__ == "__main__":
    main()
