"""The SDK against a real `tabard serve`: register, discover, credentials, errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tabard.sdk import Client, TabardAPIError
from tests.support.server import Server

ADMIN_SECRET = "sdk-admin-secret-long-enough-for-production-0123456"


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    server = Server(tmp_path_factory.mktemp("sdk"), extra_env={"TABARD_ADMIN_SECRET": ADMIN_SECRET})
    with Client(server.url, ADMIN_SECRET) as client:
        client.create_org("acme", "Acme")
        yield client
    server.stop()


class TestRegistryThroughTheSdk:
    def test_register_discover_and_decommission(self, admin: Client) -> None:
        agents = [
            admin.register_agent(
                "acme", f"bot-{n}", capabilities=["ledger.read"], visibility="public"
            )
            for n in range(3)
        ]
        found = list(admin.discover_agents(capability="ledger.read", limit=2))
        assert [agent["id"] for agent in found] == [agent["id"] for agent in agents]

        retired = admin.set_agent_status("acme", agents[0]["id"], "decommission")
        assert retired["status"] == "decommissioned"
        with pytest.raises(TabardAPIError) as raised:
            admin.set_agent_status("acme", agents[0]["id"], "reactivate")
        assert (raised.value.status, raised.value.code) == (409, "AGENT_STATE_CONFLICT")

    def test_secrets_and_private_keys_come_back_once(self, admin: Client) -> None:
        agent = admin.register_agent("acme", "keeper")
        key = admin.generate_agent_key("acme", agent["id"], "P-256")
        assert key["private_jwk"]["d"]
        credential = admin.create_client_credential("acme", agent["id"], name="main")
        assert credential["client_secret"].startswith("tbd_cs_")
        rotated = admin.rotate_client_secret("acme", agent["id"], credential["id"], 60)
        assert rotated["client_secret"] != credential["client_secret"]
        assert rotated["previous_secret_expires_at"] is not None

    def test_validation_errors_name_the_field(self, admin: Client) -> None:
        with pytest.raises(TabardAPIError) as raised:
            admin.register_agent("acme", "versioned", version="1.0")
        assert raised.value.status == 422
        assert raised.value.detail.startswith("body.version")
