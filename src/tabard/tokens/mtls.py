"""Certificate-bound access tokens (RFC 8705 §3): the client certificate a request arrived with.

The certificate comes from the TLS connection itself (the ASGI TLS extension's
`client_cert_chain`) or, behind a TLS-terminating proxy, from a configured header (URL-encoded
PEM, as nginx's `$ssl_client_escaped_cert`) that is believed only from the configured proxy
addresses; anyone else sending that header is ignored.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tabard.core.config import Settings
from tabard.core.jose import b64url_encode


def client_certificate_chain(
    scope: Mapping[str, Any], headers: Mapping[str, str], settings: Settings
) -> tuple[x509.Certificate, ...]:
    """The client's certificate chain, leaf first (empty when there is none or it is unreadable:
    a certificate that cannot be read proves and binds nothing)."""
    chain = scope.get("extensions", {}).get("tls", {}).get("client_cert_chain") or []
    if chain:
        return _chain_of_pems(tuple(str(pem) for pem in chain))
    header = settings.mtls_client_cert_header
    if not header or not _from_trusted_proxy(scope, tuple(settings.trusted_proxies)):
        return ()
    forwarded = headers.get(header.lower())
    if not forwarded:
        return ()
    return _chain_of_pems((unquote(forwarded),))


def certificate_thumbprint(chain: tuple[x509.Certificate, ...]) -> str | None:
    """`x5t#S256` of the client certificate (base64url SHA-256 of its DER), or None."""
    if not chain:
        return None
    return b64url_encode(hashlib.sha256(chain[0].public_bytes(Encoding.DER)).digest())


def _from_trusted_proxy(scope: Mapping[str, Any], proxies: tuple[str, ...]) -> bool:
    client = scope.get("client")
    if not client or not proxies:
        return False
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return False
    return any(address in network for network in _networks(proxies))


@lru_cache(maxsize=8)
def _networks(
    proxies: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in proxies)


@lru_cache(maxsize=1024)
def _chain_of_pems(pems: tuple[str, ...]) -> tuple[x509.Certificate, ...]:
    try:
        return tuple(c for pem in pems for c in x509.load_pem_x509_certificates(pem.encode()))
    except ValueError:
        return ()
