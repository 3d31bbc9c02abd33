"""The DPoP `htu` comparison (RFC 9449 §4.3 step 9): a URI without query and fragment,
normalised per RFC 3986 §6.2.2-6.2.3, so equivalent spellings of one URL compare equal."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final
from urllib.parse import urlsplit

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_FORBIDDEN_IN_URI: Final = re.compile(r"[^\x21-\x7e]")  # controls, spaces, non-ASCII
_PERCENT: Final = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


@lru_cache(maxsize=512)
def normalized_htu(uri: str) -> str | None:
    """`uri` without query and fragment, normalised per RFC 3986 §6.2.2-6.2.3; None when it is
    not an absolute http(s) URI without userinfo.

    Scheme and host are lowercased, a default or empty port dropped, percent-encodings uppercased
    (unreserved characters decoded), dot segments removed and an empty path made "/".
    """
    if _FORBIDDEN_IN_URI.search(uri):
        return None
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    host = _normalize_percent(parts.hostname).lower()
    if ":" in host:
        host = f"[{host}]"
    authority = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = _remove_dot_segments(_normalize_percent(parts.path)) or "/"
    return f"{scheme}://{authority}{path}"


def _normalize_percent(text: str) -> str:
    """Uppercase percent-encodings and decode those of unreserved characters (§6.2.2.1-2)."""

    def replace(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else f"%{match.group(1).upper()}"

    return _PERCENT.sub(replace, text)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, applied to an absolute path."""
    output: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/".join(output)
