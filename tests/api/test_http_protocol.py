"""`api.http_protocol`: a response leaves in one write, nothing is lost, reordered or held back.

The transport tests run on a real loopback TCP connection and watch the peer's socket: what a
write sends shows up there at once, so "nothing yet, then everything" is the coalescing itself.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
import uvicorn

from tabard.api.app import create_app
from tabard.api.http_protocol import CoalescingHttpToolsProtocol, CoalescingTransport
from tabard.core.config import Settings
from tabard.core.runtime import Runtime
from tests.support.server import free_port

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n"
BODY = b"body"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


async def _connect(
    listener: socket.socket,
) -> tuple[asyncio.Transport, socket.socket]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, *listener.getsockname()[:2])
    peer, _ = listener.accept()
    peer.setblocking(False)
    return transport, peer


@pytest.fixture
async def coalesced(
    listener: socket.socket,
) -> AsyncIterator[tuple[CoalescingTransport, socket.socket]]:
    """A `CoalescingTransport` on a real connection, and the peer's end of it."""
    transport, peer = await _connect(listener)
    coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
    yield coalescing, peer
    coalescing.close()
    peer.close()


async def _read(peer: socket.socket, size: int) -> bytes:
    """`size` bytes from the peer, waiting up to 5 s for them."""
    data = b""
    for _ in range(500):
        try:
            chunk = peer.recv(size - len(data))
        except BlockingIOError:
            chunk = b""
        data += chunk
        if len(data) >= size or (chunk == b"" and _at_eof(peer)):
            return data
        await asyncio.sleep(0.01)
    return data


def _at_eof(peer: socket.socket) -> bool:
    try:
        return peer.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False


def _nothing_arrived(peer: socket.socket) -> bool:
    try:
        peer.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    return False


async def test_a_plain_transport_sends_each_write_at_once(listener: socket.socket) -> None:
    # The observation the next test relies on: a write shows up at the peer immediately.
    transport, peer = await _connect(listener)
    transport.write(HEAD)
    assert await _read(peer, len(HEAD)) == HEAD
    transport.close()
    peer.close()


async def test_nothing_is_sent_before_the_step_ends(
    coalesced: tuple[CoalescingTransport, socket.socket],
) -> None:
    coalescing, peer = coalesced
    coalescing.write(HEAD)
    coalescing.write(BODY)
    assert coalescing.get_write_buffer_size() == len(HEAD) + len(BODY)
    # Still inside the step: a plain transport would have sent HEAD already (test above).
    for _ in range(20):
        assert _nothing_arrived(peer)
    await asyncio.sleep(0)  # the step ends: one write of both
    assert await _read(peer, len(HEAD) + len(BODY)) == HEAD + BODY
    assert coalescing.get_write_buffer_size() == 0


async def test_close_sends_what_is_buffered_then_the_end(
    coalesced: tuple[CoalescingTransport, socket.socket],
) -> None:
    coalescing, peer = coalesced
    coalescing.write(HEAD)
    coalescing.write(BODY)
    coalescing.close()
    assert coalescing.is_closing()
    assert await _read(peer, 1024) == HEAD + BODY
    assert _at_eof(peer)


async def test_abort_drops_what_is_buffered(
    coalesced: tuple[CoalescingTransport, socket.socket],
) -> None:
    coalescing, peer = coalesced
    coalescing.write(HEAD)
    coalescing.abort()
    await asyncio.sleep(0.05)
    try:
        data = await _read(peer, 1024)
    except ConnectionResetError:  # an abort resets the connection
        data = b""
    assert data == b""


async def test_empty_writes_schedule_nothing(
    coalesced: tuple[CoalescingTransport, socket.socket],
) -> None:
    coalescing, peer = coalesced
    coalescing.write(b"")
    assert coalescing.get_write_buffer_size() == 0
    coalescing.writelines([b"a", b"", b"b"])
    await asyncio.sleep(0)
    assert await _read(peer, 2) == b"ab"


@pytest.fixture
async def served(settings: Settings, runtime: Runtime) -> AsyncIterator[int]:
    """Tabard on uvicorn with the protocol, as `tabard serve` runs it; yields the port."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, runtime=runtime),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        http=CoalescingHttpToolsProtocol,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    for _ in range(600):
        if server.started:
            break
        await asyncio.sleep(0.02)
    yield port
    server.should_exit = True
    await serving


async def _exchange(port: int, request: bytes) -> bytes:
    """Send `request`, read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    data = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    return data


async def test_pipelined_requests_are_answered_whole_and_in_order(served: int) -> None:
    request = b"GET /health HTTP/1.1\r\nhost: x\r\nx-request-id: first\r\n\r\n"
    request += b"GET /v1/nothing-here HTTP/1.1\r\nhost: x\r\nx-request-id: second\r\n"
    request += b"connection: close\r\n\r\n"
    data = await _exchange(served, request)
    first, _, rest = data.partition(b"HTTP/1.1 404")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"x-request-id: first\r\n" in first
    assert b'"status":"ok"' in first
    assert b"x-content-type-options: nosniff\r\n" in first
    assert b"x-request-id: second\r\n" in rest
    assert b"connection: close\r\n" in rest
    assert rest.endswith(b"}")  # the problem document, complete, then the close


async def test_a_response_to_a_closing_request_is_complete_before_the_close(served: int) -> None:
    data = await _exchange(served, b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.startswith(b"content-length")
    )
    assert len(body) == length
    assert body.startswith(b'{"status":"ok"')
