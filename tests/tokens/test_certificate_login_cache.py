"""A process remembers a certificate login for a few seconds (the caller cache), so a busy
agent's logins cost no database read or path validation; every change that refuses the
certificate (its revocation, its CA's replacement, the agent's or org's suspension, a rotated
pin) still applies to the very next login.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN
from tests.pki.support import MTLS
from tests.tokens.certificate_support import (
    CertifiedAgent,
    acme_bot,
    another_certificate,
    assert_refused,
    holder_login,
    revoke_certificate,
)


@pytest.fixture
def overrides() -> dict[str, Any]:
    return dict(MTLS)


@pytest.fixture
async def bot(client: httpx.AsyncClient) -> CertifiedAgent:
    return await acme_bot(client)


async def _revoke(client: httpx.AsyncClient, bot: CertifiedAgent) -> None:
    await revoke_certificate(client, ca_id=bot.record["ca_id"], serial=bot.serial)


async def _replace_ca(client: httpx.AsyncClient, bot: CertifiedAgent) -> None:
    url = f"/v1/orgs/acme/cas/{bot.record['ca_id']}/replace"
    assert (await client.post(url, json={"source": "generate"}, headers=ADMIN)).status_code == 201


async def _suspend_agent(client: httpx.AsyncClient, bot: CertifiedAgent) -> None:
    url = f"/v1/orgs/acme/agents/{bot.id}/suspend"
    assert (await client.post(url, headers=ADMIN)).status_code == 200


async def _suspend_org(client: httpx.AsyncClient, bot: CertifiedAgent) -> None:
    assert (await client.post("/v1/orgs/acme/suspend", headers=ADMIN)).status_code == 200


async def _rotate_pin(client: httpx.AsyncClient, bot: CertifiedAgent) -> None:
    renewed = await another_certificate(client, bot)
    url = f"/v1/orgs/acme/agents/{bot.id}/certificate-pin"
    body = {"certificate_id": renewed.record["id"]}
    assert (await client.put(url, json=body, headers=ADMIN)).status_code == 200


CHANGES = {
    "revoked": (_revoke, "CERTIFICATE_REVOKED"),
    "ca-replaced": (_replace_ca, "CERTIFICATE_CA_REPLACED"),
    "agent-suspended": (_suspend_agent, "AGENT_NOT_ACTIVE"),
    "org-suspended": (_suspend_org, "ORG_SUSPENDED"),
    "pin-rotated": (_rotate_pin, "CERTIFICATE_MISMATCH"),
}


class TestRememberedLogin:
    @pytest.mark.parametrize("change", list(CHANGES))
    async def test_change_applies_to_the_next_login_at_once(
        self, client: httpx.AsyncClient, bot: CertifiedAgent, change: str
    ) -> None:
        make_change, code = CHANGES[change]
        assert (await holder_login(client, bot)).status_code == 200
        assert (await holder_login(client, bot)).status_code == 200  # remembered now

        await make_change(client, bot)

        await assert_refused(client, await holder_login(client, bot), code)
