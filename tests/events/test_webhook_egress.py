"""Where Tabard may send webhooks: `https` only in production, plain `http` only to loopback in
development; non-public addresses refused in production unless allowed; the host resolved once
and connected to by address with the original `Host`; redirects never followed. Unit tests of
the policy, then the real sender against receivers on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tabard.core.config import Settings, load_settings
from tabard.events import egress
from tabard.events.service import Events
from tests.conftest import ADMIN, ADMIN_SECRET, create_agent, create_org
from tests.events.conftest import deliver
from tests.support.webhook_receiver import Receiver

PRODUCTION = {
    "env": "production",
    "public_url": "https://tabard.example",
    "admin_secret": SecretStr(ADMIN_SECRET),
    "secret_key": SecretStr("production-secret-key-0123456789abcdef"),
    "master_key": SecretStr("production-master-key-0123456789abcdef"),
}
NOT_PUBLIC = [
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "127.0.0.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "0.0.0.0",  # noqa: S104 - an address to refuse, not one to bind
    "::1",
    "[::1]",
    "fc00::1",
    "fe80::1",
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
]


@pytest.fixture
def development() -> Settings:
    return load_settings()


@pytest.fixture
def production() -> Settings:
    return load_settings(**PRODUCTION)


class TestCheckUrl:
    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:8000/hook",
            "http://127.8.9.10/hook",
            "http://localhost/hook",
            "http://LocalHost:8000/hook",
            "http://[::1]:8000/hook",
            "https://hooks.example.com/hook",
            "https://10.0.0.1/hook",  # addresses are checked when sending, after resolving
        ],
    )
    def test_development_allows_https_and_plain_http_to_loopback(
        self, development: Settings, url: str
    ) -> None:
        egress.check_url(url, development)

    @pytest.mark.parametrize(
        "url",
        [
            "http://example.com/hook",
            "http://10.0.0.1/hook",
            "http://192.168.1.1/hook",
            "http://127.0.0.1.nip.io/hook",
            "http://localhost.example.com/hook",
        ],
    )
    def test_development_refuses_plain_http_beyond_loopback(
        self, development: Settings, url: str
    ) -> None:
        with pytest.raises(egress.EgressRefused, match="loopback addresses only"):
            egress.check_url(url, development)

    @pytest.mark.parametrize(
        "url",
        [
            "https://user:password@hooks.example.com/hook",
            "https://token@hooks.example.com/hook",
            "http://:password@127.0.0.1/hook",
        ],
    )
    def test_credentials_in_the_url_are_refused(self, development: Settings, url: str) -> None:
        with pytest.raises(egress.EgressRefused, match="credentials"):
            egress.check_url(url, development)

    @pytest.mark.parametrize(
        "url",
        [
            "ftp://127.0.0.1/hook",
            "file:///etc/passwd",
            "gopher://127.0.0.1:70/",
            "ws://127.0.0.1/hook",
            "javascript:alert(1)",
            "//hooks.example.com/hook",
            "hooks.example.com/hook",
            "https:///hook",
        ],
    )
    def test_anything_but_an_absolute_http_url_is_refused(
        self, development: Settings, url: str
    ) -> None:
        with pytest.raises(egress.EgressRefused, match="absolute http"):
            egress.check_url(url, development)

    @pytest.mark.parametrize(
        "url", ["http://127.0.0.1:8000/hook", "http://localhost/hook", "http://[::1]/hook"]
    )
    def test_production_refuses_plain_http_even_to_loopback(
        self, production: Settings, url: str
    ) -> None:
        with pytest.raises(egress.EgressRefused, match="https URLs only"):
            egress.check_url(url, production)

    def test_production_allows_https(self, production: Settings) -> None:
        egress.check_url("https://hooks.example.com/hook", production)


class TestPrivateAllowed:
    def test_development_allows_private_networks_by_default(self, development: Settings) -> None:
        assert egress.private_allowed(development) is True

    def test_production_refuses_private_networks_by_default(self, production: Settings) -> None:
        assert egress.private_allowed(production) is False

    @pytest.mark.parametrize("configured", [True, False])
    def test_an_explicit_setting_wins(self, configured: bool) -> None:
        for base in ({}, PRODUCTION):
            settings = load_settings(**base, webhook_allow_private_networks=configured)
            assert egress.private_allowed(settings) is configured, base


class TestResolve:
    @pytest.mark.parametrize("host", NOT_PUBLIC)
    async def test_a_non_public_address_is_refused_unless_allowed(self, host: str) -> None:
        with pytest.raises(egress.EgressRefused, match="not a public address"):
            await egress.resolve(host, allow_private=False)

        address = await egress.resolve(host, allow_private=True)

        assert address == ipaddress.ip_address(host.strip("[]"))

    @pytest.mark.parametrize("host", ["93.184.216.34", "2606:4700:4700::1111", "[2001:4860::8888]"])
    async def test_a_public_address_is_accepted(self, host: str) -> None:
        address = await egress.resolve(host, allow_private=False)

        assert address == ipaddress.ip_address(host.strip("[]"))

    async def test_a_name_is_judged_by_the_address_it_resolves_to(self) -> None:
        with pytest.raises(egress.EgressRefused, match=r"localhost resolves to 127\.0\.0\.1"):
            await egress.resolve("localhost", allow_private=False)

        assert await egress.resolve("localhost", allow_private=True) == ipaddress.ip_address(
            "127.0.0.1"
        )

    async def test_a_name_that_does_not_resolve_is_refused(self) -> None:
        with pytest.raises(egress.EgressRefused, match="does not resolve"):
            await egress.resolve("no-such-host.invalid", allow_private=True)


class Redirector:
    """A loopback HTTP server answering every request with `302 Found` to `location`."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        self.requests.append(head + await reader.readexactly(length))
        writer.write(
            b"HTTP/1.1 302 Found\r\nLocation: " + self.location.encode() + b"\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def redirector(receiver: Receiver) -> AsyncIterator[Redirector]:
    """Redirects to the `receiver`, which therefore sees any request that follows it."""
    server = Redirector(receiver.url)
    await server.start()
    yield server
    await server.stop()


async def subscribe_to(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """A subscription of acme (created) to `url` for registered agents."""
    await create_org(client, "acme")
    response = await client.post(
        "/v1/orgs/acme/webhooks",
        json={"url": url, "event_types": ["agent.created"]},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    subscription: dict[str, Any] = response.json()
    return subscription


async def attempts_after_an_event(
    client: httpx.AsyncClient, events: Events, *subscriptions: dict[str, Any]
) -> list[dict[str, Any]]:
    """Register an agent, deliver, and return each subscription's one delivery's one attempt."""
    await create_agent(client, "acme", "egress-bot")
    await deliver(events)
    attempts = []
    for subscription in subscriptions:
        url = f"/v1/orgs/acme/webhooks/{subscription['id']}/deliveries"
        response = await client.get(url, headers=ADMIN)
        assert response.status_code == 200, response.text
        [delivery] = response.json()["items"]
        [attempt] = delivery["attempt_log"]
        attempts.append({**attempt, "status": delivery["status"]})
    return attempts


class TestSendingInProduction:
    @pytest.fixture
    def overrides(self) -> dict[str, Any]:
        return PRODUCTION

    async def test_loopback_by_address_or_by_name_is_refused_without_connecting(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver
    ) -> None:
        by_address = await subscribe_to(client, f"https://127.0.0.1:{receiver.port}/hook")
        response = await client.post(
            "/v1/orgs/acme/webhooks",
            json={"url": f"https://localhost:{receiver.port}/hook", "event_types": ["agent.*"]},
            headers=ADMIN,
        )
        by_name = response.json()

        attempts = await attempts_after_an_event(client, events, by_address, by_name)

        assert [(a["error"], a["status_code"], a["status"]) for a in attempts] == [
            (
                "refused: 127.0.0.1 resolves to 127.0.0.1, which is not a public address",
                None,
                "pending",
            ),
            (
                "refused: localhost resolves to 127.0.0.1, which is not a public address",
                None,
                "pending",
            ),
        ]
        assert receiver.received == []

    @pytest.mark.parametrize("overrides", [{**PRODUCTION, "webhook_allow_private_networks": True}])
    async def test_allowed_private_networks_are_connected_to(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver
    ) -> None:
        subscription = await subscribe_to(client, f"https://localhost:{receiver.port}/hook")

        [attempt] = await attempts_after_an_event(client, events, subscription)

        # The receiver speaks plain HTTP: the TLS handshake it was sent fails, so it was tried.
        assert not attempt["error"].startswith("refused:"), attempt
        assert attempt["error"].startswith("ConnectError:"), attempt
        assert "SSL" in attempt["error"], attempt


class TestSendingInDevelopment:
    async def test_the_resolved_address_is_called_with_the_original_host(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver
    ) -> None:
        subscription = await subscribe_to(client, f"http://localhost:{receiver.port}/hook")
        receiver.secrets.append(subscription["secret"])

        [attempt] = await attempts_after_an_event(client, events, subscription)

        assert (attempt["status_code"], attempt["status"]) == (204, "succeeded")
        [received] = receiver.verified()
        assert received.headers["host"] == f"localhost:{receiver.port}"
        assert received.event["type"] == "agent.created"

    async def test_a_redirect_is_not_followed(
        self,
        client: httpx.AsyncClient,
        events: Events,
        receiver: Receiver,
        redirector: Redirector,
    ) -> None:
        subscription = await subscribe_to(client, redirector.url)

        [attempt] = await attempts_after_an_event(client, events, subscription)

        assert (attempt["status_code"], attempt["error"], attempt["status"]) == (
            302,
            None,
            "pending",
        )
        assert len(redirector.requests) == 1
        assert redirector.requests[0].startswith(b"POST /hook HTTP/1.1\r\n")
        assert receiver.received == []

    @pytest.mark.parametrize("overrides", [{"webhook_allow_private_networks": False}])
    async def test_private_networks_refused_by_setting_are_refused(
        self, client: httpx.AsyncClient, events: Events, receiver: Receiver
    ) -> None:
        subscription = await subscribe_to(client, receiver.url)

        [attempt] = await attempts_after_an_event(client, events, subscription)

        assert attempt["error"].startswith("refused: 127.0.0.1 resolves to 127.0.0.1"), attempt
        assert receiver.received == []
