"""Calling receivers safely (webhooks): where Tabard may send a request, and sending it.

`https` only in production; in development plain `http` only to loopback. Private, loopback,
link-local and other non-public addresses are refused in production unless
`TABARD_WEBHOOK_ALLOW_PRIVATE_NETWORKS` allows them (in development they are allowed). The host
is resolved once and the connection goes to that address (the `Host` header and TLS name stay
the host's), so a DNS answer that changes between the check and the connection cannot point the
request elsewhere. No redirects are followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

import httpx

from tabard.core.config import Settings

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressRefused(Exception):
    """Tabard will not send there; the message says why."""


def check_url(url: str, settings: Settings) -> None:
    """Refuse a URL that can never be called under the deployment's policy."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EgressRefused("the URL must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise EgressRefused("the URL must not carry credentials")
    if parts.scheme == "http":
        if settings.is_production:
            raise EgressRefused("production deployments send to https URLs only")
        if not _is_loopback_name(parts.hostname):
            raise EgressRefused("plain http is allowed to loopback addresses only")


def private_allowed(settings: Settings) -> bool:
    configured = settings.webhook_allow_private_networks
    return (not settings.is_production) if configured is None else configured


async def resolve(host: str, allow_private: bool) -> IpAddress:
    """The address to connect to; refused when it is not public (unless allowed)."""
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    address = literal or await _lookup(host)
    if not allow_private and not address.is_global:
        raise EgressRefused(f"{host} resolves to {address}, which is not a public address")
    return address


async def _lookup(host: str) -> IpAddress:
    loop = asyncio.get_running_loop()
    try:
        answers = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise EgressRefused(f"{host} does not resolve ({exc.strerror})") from None
    return ipaddress.ip_address(answers[0][4][0])


async def post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    settings: Settings,
    seconds: float,
) -> httpx.Response:
    """POST `body` to `url` by its resolved address; EgressRefused, or httpx's errors."""
    check_url(url, settings)
    parts = urlsplit(url)
    host = parts.hostname or ""
    address = await resolve(host, private_allowed(settings))
    netloc = f"[{address}]" if address.version == 6 else str(address)
    if parts.port:
        netloc += f":{parts.port}"
    direct = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    request_headers = {**headers, "Host": parts.netloc.rsplit("@", 1)[-1]}
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return await client.post(
        direct,
        content=body,
        headers=request_headers,
        timeout=seconds,
        follow_redirects=False,
        extensions=extensions,
    )


def _is_loopback_name(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
