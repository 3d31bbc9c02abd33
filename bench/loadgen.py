"""One load-generator process: N keep-alive HTTP/1.1 connections on a raw asyncio loop.

Reads its job as JSON on stdin (so secrets stay out of argv), prints its figures as JSON on
stdout. All processes of a run share an absolute start time on the system-wide monotonic clock
(CLOCK_MONOTONIC on Linux), so their warm-up and measurement windows line up. Every loop is
bounded by a deadline and by a request cap, so it always stops.

A job is one GET by default; optional fields make it a POST with a body (`method`, `body`), give
each connection its own headers (`connection_headers`, e.g. one client's credentials per
connection), or give every request a fresh DPoP proof (`dpop`, RFC 9449 §4): proofs are signed
before the start time, so signing costs the measured window nothing (and on the fly only if the
pre-signed pool runs dry, which `dpop_signed_late` counts). A run longer than a proof lives gets
its proofs in windows of later `iat`s, all signed ahead.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

REQUEST_TIMEOUT_S = 10.0
MAX_REQUESTS_PER_CONNECTION = 2_000_000
RECONNECT_PAUSE_S = 0.05
PROOF_MAX_AGE_S = 60  # how old a DPoP proof the server takes (DpopVerifier max_age_seconds)
PROOF_IAT_LEAD_S = 3  # below the 5 s of clock skew it allows
# Proofs of a long run are signed ahead in windows this far apart, each with its own iat: every
# window is usable from just after the previous one's middle until its own iat + 58 s.
PROOF_WINDOW_S = 50


class RequestSource(Protocol):
    """The bytes of a connection's next request."""

    def next(self) -> bytes: ...


@dataclass(frozen=True)
class StaticRequest:
    """The same request every time."""

    raw: bytes

    def next(self) -> bytes:
        return self.raw


class NumberedBodies:
    """A body that names a different instance each time: `{n}` in the template becomes
    n = start, start + step, … (mod `count`), so C connections together cycle through `count`
    distinct instances (a fleet's heartbeats). With `fresh_every` k > 0, every k-th body names
    an instance never named before (n = count + start, count + start + step, …): a first beat,
    as the audited share of a fleet's steady state is."""

    def __init__(
        self, template: str, start: int, step: int, count: int, fresh_every: int = 0
    ) -> None:
        self._template = template
        self._n, self._step, self._count = start % count, step, count
        self._fresh_n, self._fresh_every, self._sent = count + start % step, fresh_every, 0

    def next(self) -> bytes:
        """`Content-Length` and the blank line, then the body."""
        self._sent += 1
        if self._fresh_every and self._sent % self._fresh_every == 0:
            n, self._fresh_n = self._fresh_n, self._fresh_n + self._step
        else:
            n, self._n = self._n, (self._n + self._step) % self._count
        body = self._template.replace("{n}", str(n)).encode("latin-1")
        return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


@dataclass(frozen=True)
class NumberedRequests:
    """The same request head, each time with the next numbered body."""

    head: bytes
    bodies: NumberedBodies

    def next(self) -> bytes:
        return self.head + b"\r\n" + self.bodies.next()


class DpopRequests:
    """Requests with a DPoP-bound token and a new proof each (RFC 9449 §4.2, §7.1): unique
    `jti`, `htm`/`htu` of the request, `ath` of the token. Proofs come from a pool signed ahead.
    With `bodies`, each request carries the next numbered body (DPoP-bound heartbeats)."""

    def __init__(
        self,
        head: str,
        holder: dict[str, Any],
        htm: str,
        htu: str,
        bodies: NumberedBodies | None = None,
    ) -> None:
        jwk = holder["jwk"]
        numbers = ec.EllipticCurvePublicNumbers(
            _b64int(jwk["x"]), _b64int(jwk["y"]), ec.SECP256R1()
        )
        self._key = ec.EllipticCurvePrivateNumbers(_b64int(jwk["d"]), numbers).private_key()
        public = {"kty": "EC", "crv": "P-256", "x": jwk["x"], "y": jwk["y"]}
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": public}
        self._header = _b64(json.dumps(header, separators=(",", ":")).encode())
        token = holder["access_token"]
        self._ath = _b64(hashlib.sha256(token.encode()).digest())
        self._htm, self._htu = htm, htu
        self._head = f"{head}\r\nAuthorization: DPoP {token}\r\nDPoP: ".encode("latin-1")
        self._bodies = bodies
        # (usable from, usable until, proofs) per window of iat, the latest window last.
        self._pools: list[tuple[float, float, list[bytes]]] = []
        self.signed_late = 0

    def presign(self, count: int, iat: int, span_s: float) -> None:
        """Sign `count` proofs for a run of `span_s` seconds whose first proofs are issued at
        `iat`, a few seconds after the start. The server takes a proof from 5 s before its `iat`
        to 60 s after, so a run longer than ~55 s gets one window of proofs per
        `PROOF_WINDOW_S`, each issued later, all signed before the start."""
        windows = max(1, math.ceil((span_s + PROOF_IAT_LEAD_S) / PROOF_WINDOW_S))
        per_window = math.ceil(count / windows)
        for window in range(windows):
            window_iat = iat + window * PROOF_WINDOW_S
            proofs = [self._proof(window_iat) for _ in range(per_window)]
            usable = (window_iat - PROOF_IAT_LEAD_S, window_iat + PROOF_MAX_AGE_S - 2)
            self._pools.append((*usable, proofs))

    def next(self) -> bytes:
        proof = self._pooled(time.time())
        if proof is None:
            self.signed_late += 1
            proof = self._proof(int(time.time()))
        if self._bodies is None:
            return self._head + proof + b"\r\n\r\n"
        return self._head + proof + b"\r\n" + self._bodies.next()

    def _pooled(self, now: float) -> bytes | None:
        """A pre-signed proof the server takes now, from the latest window that has one."""
        for usable_from, usable_until, proofs in reversed(self._pools):
            if proofs and usable_from <= now < usable_until:
                return proofs.pop()
        return None

    def _proof(self, iat: int) -> bytes:
        claims = {
            "jti": secrets.token_urlsafe(16),
            "htm": self._htm,
            "htu": self._htu,
            "iat": iat,  # the server checks iat against its wall clock
            "ath": self._ath,
        }
        signing_input = f"{self._header}.{_b64(json.dumps(claims).encode())}".encode()
        r, s = decode_dss_signature(self._key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return signing_input + b"." + _b64(signature).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64int(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


@dataclass(frozen=True)
class Job:
    """What to load and when: the measurement window is [measure_from, measure_until).

    Connection i sends the requests of `sources[i]`."""

    host: str
    port: int
    sources: list[RequestSource]
    start_at: float
    measure_from: float
    measure_until: float
    presign_per_connection: int = 0

    @property
    def connections(self) -> int:
        return len(self.sources)


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


def build_request(
    host: str, port: int, path: str, headers: dict[str, str], method: str = "GET", body: str = ""
) -> bytes:
    """The raw bytes of one keep-alive request (a GET unless told otherwise)."""
    return (request_head(host, port, path, headers, method, body) + "\r\n\r\n" + body).encode(
        "latin-1"
    )


def request_head(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    method: str = "GET",
    body: str = "",
    *,
    with_length: bool = True,
) -> str:
    """Request line and headers, without the blank line that ends them; without
    `Content-Length` when each request brings its own (`with_length=False`)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive"]
    if with_length and (body or method not in ("GET", "HEAD")):
        lines.append(f"Content-Length: {len(body.encode('latin-1'))}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return "\r\n".join(lines)


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


async def connection_loop(job: Job, tally: Tally, source: RequestSource) -> None:
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
            keep = await one_request(job, tally, source.next(), *stream)
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
    job: Job,
    tally: Tally,
    request: bytes,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> bool:
    """Send one request and record it; return whether the connection is still usable."""
    started = time.monotonic()
    try:
        writer.write(request)
        status, keep = await asyncio.wait_for(read_response(reader), REQUEST_TIMEOUT_S)
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
        tally.count_transport_error(started, job)
        await asyncio.sleep(RECONNECT_PAUSE_S)
        return False
    tally.record(status, started, time.monotonic(), job)
    return keep


async def run(job: Job) -> Tally:
    """Sign what must be signed ahead, wait for the shared start time, then drive every
    connection of this process."""
    iat = int(time.time() + (job.start_at - time.monotonic())) + PROOF_IAT_LEAD_S
    for source in job.sources:
        if isinstance(source, DpopRequests):
            source.presign(job.presign_per_connection, iat, job.measure_until - job.start_at)
    if time.monotonic() > job.start_at:
        print("loadgen: pre-signing overran the start time", file=sys.stderr)
    await asyncio.sleep(max(0.0, job.start_at - time.monotonic()))
    tally = Tally()
    cpu_before = time.process_time()
    await asyncio.gather(*(connection_loop(job, tally, source) for source in job.sources))
    tally.cpu_s = time.process_time() - cpu_before
    return tally


def parse_job(raw: dict[str, Any]) -> Job:
    """Build a `Job` from the JSON the runner sends."""
    start_at = float(raw["start_at"])
    measure_from = start_at + float(raw["warmup_s"])
    dpop = raw.get("dpop")
    return Job(
        host=raw["host"],
        port=int(raw["port"]),
        sources=request_sources(raw),
        start_at=start_at,
        measure_from=measure_from,
        measure_until=measure_from + float(raw["duration_s"]),
        presign_per_connection=int(dpop.get("presign_per_connection", 0)) if dpop else 0,
    )


def request_sources(raw: dict[str, Any]) -> list[RequestSource]:
    """One request source per connection: the job's request, with connection i's own headers
    (`connection_headers[i % n]`) and, for a DPoP job, holder `i % n`'s token and proofs."""
    host, port, path = raw["host"], int(raw["port"]), raw["path"]
    method, body = raw.get("method", "GET"), raw.get("body", "")
    per_connection: list[dict[str, str]] = raw.get("connection_headers") or [{}]
    dpop = raw.get("dpop")
    numbered = raw.get("numbered_body")  # {"template", "count", "offset", "step", "fresh_every"}
    sources: list[RequestSource] = []
    for i in range(int(raw["connections"])):
        headers = {**raw.get("headers", {}), **per_connection[i % len(per_connection)]}
        bodies = None
        if numbered is not None:
            bodies = NumberedBodies(
                numbered["template"],
                int(numbered["offset"]) + i,
                int(numbered["step"]),
                int(numbered["count"]),
                int(numbered.get("fresh_every", 0)),
            )
        # A numbered body brings its own Content-Length.
        head = request_head(host, port, path, headers, method, with_length=bodies is None)
        if dpop is not None:
            holder = dpop["holders"][i % len(dpop["holders"])]
            htm = dpop.get("htm", method)
            sources.append(DpopRequests(head, holder, htm, dpop["htu"], bodies))
        elif bodies is not None:
            sources.append(NumberedRequests(head.encode("latin-1"), bodies))
        else:
            sources.append(StaticRequest(build_request(host, port, path, headers, method, body)))
    return sources


def main() -> None:
    """Read the job from stdin, run it, print the tally as JSON."""
    job = parse_job(json.load(sys.stdin))
    tally = asyncio.run(run(job))
    late = sum(s.signed_late for s in job.sources if isinstance(s, DpopRequests))
    json.dump(
        {
            "latencies_us": tally.latencies_us,
            "statuses": tally.statuses,
            "transport_errors": tally.transport_errors,
            "cpu_s": round(tally.cpu_s, 3),
            "dpop_signed_late": late,
        },
        sys.stdout,
        separators=(",", ":"),
    )


if __name__ == "__main__":
    main()
