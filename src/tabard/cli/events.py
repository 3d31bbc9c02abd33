"""`tabard events`: a server's event stream in the terminal, like a log tail.

It reads `GET /v1/events` (Server-Sent Events) with an org API key or the admin secret. With
`--follow` it keeps reading and, when the connection drops, reconnects with `Last-Event-ID`, so
no event is skipped or shown twice; `--once` prints what there is and exits (for scripts).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, connect_sse

RECONNECT_SECONDS = (0.5, 1, 2, 5, 10)
MAX_BACKLOG = 1000  # the most events a stream starts back (GET /v1/events?last=)


class StreamRefused(Exception):
    """The server said no (bad key, unknown org or event id, …); the message says why."""


@dataclass(frozen=True)
class StreamOptions:
    url: str
    token: str
    types: list[str]
    org: str | None
    after: str | None
    last: int
    follow: bool


def stream(options: StreamOptions, on_notice: Callable[[str], None]) -> Iterator[dict[str, Any]]:
    """The events, as envelopes; with `follow`, until interrupted.

    When following, `on_notice` hears of every connection made and every one lost, so an
    operator watching a quiet stream knows whether it is live.
    """
    position = _Position(options.after, options.last)
    failures = 0
    with httpx.Client(timeout=httpx.Timeout(10, read=60), trust_env=False) as client:
        while True:
            try:
                for event in _read(client, options, position, on_notice):
                    failures = 0
                    yield event
                if not options.follow:
                    return
            except httpx.TransportError as exc:
                if not options.follow:
                    raise StreamRefused(f"cannot read {options.url}: {exc}") from None
                delay = RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)]
                failures += 1
                on_notice(f"connection lost ({exc}); reconnecting in {delay} s")
                time.sleep(delay)


@dataclass
class _Position:
    """Where the next connection resumes: after the last id the server sent (an event's, or
    the position a stream announces when it starts), else `last` events back. A stream that
    started with nothing to announce had no matching event before it: every one there is now
    is new, so a reconnect asks for all of them (up to the server's maximum)."""

    last_id: str | None
    last: int
    connected: bool = False

    def params(self) -> tuple[str | None, int]:
        if self.last_id:
            return self.last_id, 0
        return None, MAX_BACKLOG if self.connected else self.last


def _read(
    client: httpx.Client,
    options: StreamOptions,
    position: _Position,
    on_notice: Callable[[str], None],
) -> Iterator[dict[str, Any]]:
    last_id, last = position.params()
    params: dict[str, Any] = {"follow": str(options.follow).lower(), "type": options.types}
    if options.org:
        params["org"] = options.org
    if last:
        params["last"] = last
    headers = {"Authorization": f"Bearer {options.token}"}
    if last_id:
        headers["Last-Event-ID"] = last_id
    url = options.url.rstrip("/") + "/v1/events"
    with connect_sse(client, "GET", url, params=params, headers=headers) as source:
        if source.response.status_code != 200:
            source.response.read()
            raise StreamRefused(_problem(source.response))
        position.connected = True
        if options.follow:
            on_notice(f"connected to {url}; following")
        for message in source.iter_sse():
            if message.id:
                position.last_id = message.id
            if message.data:  # keep-alive pings and the start position carry none
                yield _envelope(message)


def _envelope(message: ServerSentEvent) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(message.data)
    return event


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
        return f"{response.status_code} {body.get('code', '')}: {body.get('detail', body)}"
    except ValueError:
        return f"{response.status_code}: {response.text[:200]}"


def line(event: dict[str, Any]) -> str:
    """One event as a log line: time, type, org, subject, data."""
    data = json.dumps(event.get("data", {}), separators=(",", ":"), sort_keys=True)
    org = event.get("org") or "-"
    subject = event.get("subject") or "-"
    return f"{event['time']}  {event['type']:<28} {org}  {subject}  {data}"
