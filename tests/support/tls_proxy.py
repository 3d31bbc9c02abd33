"""A TLS-terminating front door on loopback, as nginx runs before Tabard in production
(`ssl_verify_client optional; proxy_set_header X-Client-Cert $ssl_client_escaped_cert`).

It completes a real TLS handshake that asks for a client certificate (verified against the
bundle it was given, as nginx's `ssl_client_certificate`), then forwards each request over plain
HTTP with the client certificate URL-encoded in a header, dropping any such header the client
sent itself. One request per connection, which keeps it small.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from urllib.parse import quote

import trustme

_HEAD_LIMIT = 64 * 1024


class TlsProxy:
    def __init__(self, upstream_port: int, client_ca_pem: str, header: str, workdir: Path) -> None:
        self.upstream_port = upstream_port
        self.header = header.lower()
        self.server_ca = trustme.CA()
        certificate = self.server_ca.issue_cert("127.0.0.1")
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(self._context)
        self._context.verify_mode = ssl.CERT_OPTIONAL
        self._context.load_verify_locations(cadata=client_ca_pem)
        self.server_ca_path = workdir / f"proxy-ca-{id(self)}.pem"
        self.server_ca.cert_pem.write_to_path(str(self.server_ca_path))
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def __aenter__(self) -> TlsProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def client_context(self, certificate_path: Path, key_path: Path) -> ssl.SSLContext:
        """What an agent's HTTP client uses: trust the proxy, present its own certificate."""
        context = ssl.create_default_context(cafile=str(self.server_ca_path))
        context.load_cert_chain(str(certificate_path), str(key_path))
        return context

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > _HEAD_LIMIT:
                return
            request_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
            headers = [line for line in header_lines if not self._is_forwarded(line)]
            length = next(
                (int(line.split(":", 1)[1]) for line in headers if _named(line, "content-length")),
                0,
            )
            body = await reader.readexactly(length)
            headers = [line for line in headers if not _named(line, "connection")]
            headers += ["Connection: close", *self._certificate_header(writer)]
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port
            )
            forwarded = "\r\n".join([request_line, *headers, "", ""]).encode("latin-1")
            upstream_writer.write(forwarded + body)
            await upstream_writer.drain()
            writer.write(await upstream_reader.read())
            await writer.drain()
            upstream_writer.close()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                writer.close()

    def _is_forwarded(self, line: str) -> bool:
        return _named(line, self.header)

    def _certificate_header(self, writer: asyncio.StreamWriter) -> list[str]:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return []
        return [f"{self.header}: {quote(ssl.DER_cert_to_PEM_cert(der))}"]


def _named(line: str, name: str) -> bool:
    return line.split(":", 1)[0].strip().lower() == name
