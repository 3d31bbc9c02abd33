"""The login pin: an agent's first certificate login pins that certificate; another valid
certificate of the same agent is refused (401 `CERTIFICATE_MISMATCH`) until the org rotates the
pin (PUT …/certificate-pin) or clears it (DELETE), after which the next login pins whatever it
presents.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tabard.core.clock import FrozenClock
from tests.conftest import ADMIN
from tests.pki.support import MTLS
from tests.tokens.certificate_support import (
    CertifiedAgent,
    X5cSigner,
    acme_bot,
    another_certificate,
    assert_refused,
    assertion_login,
    certificate_token,
    holder_login,
)

MISMATCH = "This is not the agent's pinned certificate"


@pytest.fixture
def overrides() -> dict[str, Any]:
    return dict(MTLS)


@pytest.fixture
async def first(client: httpx.AsyncClient) -> CertifiedAgent:
    return await acme_bot(client)


@pytest.fixture
async def second(client: httpx.AsyncClient, first: CertifiedAgent) -> CertifiedAgent:
    """A second valid certificate of the same agent."""
    return await another_certificate(client, first)


def pin_url(holder: CertifiedAgent) -> str:
    return f"/v1/orgs/acme/agents/{holder.id}/certificate-pin"


async def pin_of(client: httpx.AsyncClient, holder: CertifiedAgent) -> dict[str, Any]:
    response = await client.get(pin_url(holder), headers=ADMIN)
    assert response.status_code == 200, response.text
    pin: dict[str, Any] = response.json()
    return pin


class TestFirstLogin:
    async def test_first_login_pins_the_certificate_it_presented(
        self, client: httpx.AsyncClient, first: CertifiedAgent
    ) -> None:
        await certificate_token(client, first)

        pin = await pin_of(client, first)
        assert pin["thumbprint"] == first.thumbprint
        assert pin["certificate_id"] == first.record["id"]
        assert pin["pinned_by"] == "first_login"

    async def test_pinned_certificate_keeps_logging_in(
        self, client: httpx.AsyncClient, first: CertifiedAgent
    ) -> None:
        await certificate_token(client, first)

        assert (await holder_login(client, first)).status_code == 200

    async def test_another_certificate_of_the_agent_is_refused_after_it(
        self, client: httpx.AsyncClient, first: CertifiedAgent, second: CertifiedAgent
    ) -> None:
        await certificate_token(client, first)

        response = await holder_login(client, second)

        await assert_refused(client, response, "CERTIFICATE_MISMATCH", MISMATCH)

    @pytest.mark.parametrize("overrides", [{}], ids=["no-mtls"])
    async def test_pin_also_holds_for_x5c_assertions(
        self,
        client: httpx.AsyncClient,
        first: CertifiedAgent,
        second: CertifiedAgent,
        clock: FrozenClock,
    ) -> None:
        pinned = await assertion_login(client, X5cSigner(first, clock).assertion())
        assert pinned.status_code == 200, pinned.text

        response = await assertion_login(client, X5cSigner(second, clock).assertion())

        await assert_refused(client, response, "CERTIFICATE_MISMATCH", MISMATCH)


class TestRotatingThePin:
    async def test_rotated_pin_lets_the_new_certificate_in_and_keeps_the_old_one_out(
        self, client: httpx.AsyncClient, first: CertifiedAgent, second: CertifiedAgent
    ) -> None:
        await certificate_token(client, first)
        body = {"certificate_id": second.record["id"]}
        rotated = await client.put(pin_url(first), json=body, headers=ADMIN)
        assert rotated.status_code == 200, rotated.text
        assert rotated.json()["thumbprint"] == second.thumbprint

        assert (await holder_login(client, second)).status_code == 200
        response = await holder_login(client, first)

        await assert_refused(client, response, "CERTIFICATE_MISMATCH", MISMATCH)

    async def test_cleared_pin_is_taken_by_the_next_login(
        self, client: httpx.AsyncClient, first: CertifiedAgent, second: CertifiedAgent
    ) -> None:
        await certificate_token(client, first)
        cleared = await client.delete(pin_url(first), headers=ADMIN)
        assert cleared.status_code == 204, cleared.text

        assert (await holder_login(client, second)).status_code == 200
        pin = await pin_of(client, first)
        assert (pin["thumbprint"], pin["pinned_by"]) == (second.thumbprint, "first_login")
        response = await holder_login(client, first)
        await assert_refused(client, response, "CERTIFICATE_MISMATCH", MISMATCH)
