"""The operator's smoke test of trust, through real `tabard serve` processes.

Two orgs are onboarded (one applies with a join invite and is approved, one is created by the
admin and attaches the CA it runs itself); five agents get certificates. Agents log in with
their certificates over real mutual TLS, through a TLS-terminating proxy on loopback as nginx
would front Tabard. Then: (1) a bound agent logs in and calls the API; (2) a revoked
certificate is refused with `CERTIFICATE_REVOKED` and the token it had stops working at once;
(3) a revoked binding refuses the login and its live token gets 403; (4) a suspended org's
agents and keys are refused; (5) the audit chain verifies and records every denial.

On SQLite it runs against one process (the embedded defaults); on PostgreSQL + Redis against two
processes sharing the database and the kv store: every change is made through the first and
must bite on the second immediately.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from tests.conftest import _truncate_postgres
from tests.pki.support import TestCa, csr_pem, ec_key, key_pem, pem
from tests.support.server import Server, free_port
from tests.support.tls_proxy import TlsProxy

pytestmark = pytest.mark.slow

ADMIN_SECRET = "scenario-admin-secret-long-enough-for-production-0123456"
ADMIN = {"Authorization": f"Bearer {ADMIN_SECRET}"}
CERT_HEADER = "X-Client-Cert"
CAPABILITIES = ["invoices.read", "invoices.write"]


@dataclass
class Deployment:
    """The process changes are made through (`first`) and the one that must enforce them."""

    first: Server
    second: Server

    @property
    def issuer(self) -> str:
        return self.first.url


def _env(port: int, extra: dict[str, str]) -> dict[str, str]:
    return {
        "TABARD_ADMIN_SECRET": ADMIN_SECRET,
        "TABARD_SECRET_KEY": "scenario-secret-key-shared-by-every-replica-0123",
        "TABARD_MASTER_KEY": "scenario-master-key-shared-by-every-replica-0123",
        "TABARD_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "TABARD_MTLS_CLIENT_CERT_HEADER": CERT_HEADER,
        "TABARD_TRUSTED_PROXIES": "127.0.0.1/32",
        **extra,
    }


@pytest.fixture(params=["sqlite", "postgres+redis"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    port = free_port()
    if request.param == "sqlite":
        server = Server(tmp_path_factory.mktemp("one"), extra_env=_env(port, {}), port=port)
        yield Deployment(server, server)
        server.stop()
        return
    database = request.getfixturevalue("migrated_postgres")
    redis_url = request.getfixturevalue("redis_url")
    asyncio.run(_truncate_postgres(database))
    shared = {
        "TABARD_DATABASE_URL": database,
        "TABARD_KV_BACKEND": "redis",
        "TABARD_REDIS_URL": redis_url,
    }
    first = Server(tmp_path_factory.mktemp("first"), extra_env=_env(port, shared), port=port)
    second = Server(tmp_path_factory.mktemp("second"), extra_env=_env(port, shared))
    yield Deployment(first, second)
    second.stop()
    first.stop()


@dataclass
class Agent:
    id: str
    org: str
    spiffe_id: str
    certificate: x509.Certificate
    certificate_path: Path
    key_path: Path


class Operator:
    """Drives the deployment over HTTP as an operator's script would."""

    def __init__(self, deployment: Deployment, workdir: Path) -> None:
        self.first = httpx.AsyncClient(base_url=deployment.first.url, timeout=30)
        self.second = httpx.AsyncClient(base_url=deployment.second.url, timeout=30)
        self.workdir = workdir

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.first.request(method, path, **kwargs)
        assert response.status_code in (200, 201, 204), (path, response.text)
        return response.json() if response.content else None

    async def onboard_by_join(self) -> str:
        """acme applies with a join invite and a Tabard-generated CA; the admin approves."""
        invite = await self.ok("POST", "/v1/invites", json={"kind": "join"}, headers=ADMIN)
        applied = await self.ok(
            "POST",
            "/v1/onboarding/join",
            json={
                "invite": invite["invite"],
                "org": {
                    "id": "acme",
                    "display_name": "Acme",
                    "contact": {"name": "Ada", "email": "ada@acme.example"},
                },
                "ca": {"source": "generate"},
            },
        )
        assert applied["org"]["status"] == "pending"
        key = {"Authorization": f"Bearer {applied['api_key']['secret']}"}
        waiting = await self.first.get("/v1/orgs/acme", headers=key)
        assert waiting.json()["code"] == "ORG_NOT_ACTIVE"
        await self.ok("POST", "/v1/orgs/acme/approve", headers=ADMIN)
        return str(applied["api_key"]["secret"])

    async def onboard_by_attach(self, ca: TestCa) -> str:
        """The admin creates globex; globex attaches the CA it runs itself (no key given)."""
        await self.ok(
            "POST", "/v1/orgs", json={"id": "globex", "display_name": "Globex"}, headers=ADMIN
        )
        invite = await self.ok(
            "POST", "/v1/invites", json={"kind": "attach", "org_id": "globex"}, headers=ADMIN
        )
        attached = await self.ok(
            "POST",
            "/v1/onboarding/attach",
            json={
                "invite": invite["invite"],
                "ca": {"source": "upload", "certificate_pem": ca.pem},
            },
        )
        assert attached["ca"]["can_issue"] is False
        return str(attached["api_key"]["secret"])

    async def agent(self, org: str, key: str, name: str, ca: TestCa | None = None) -> Agent:
        headers = {"Authorization": f"Bearer {key}"}
        agent = await self.ok(
            "POST",
            f"/v1/orgs/{org}/agents",
            json={"name": name, "capabilities": CAPABILITIES},
            headers=headers,
        )
        private_key = ec_key()
        spiffe_id = f"spiffe://127.0.0.1/org/{org}/agent/{name}"
        if ca is None:  # Tabard signs the agent's CSR with the org's CA
            issued = await self.ok(
                "POST",
                f"/v1/orgs/{org}/agents/{agent['id']}/certificates",
                json={"csr_pem": csr_pem(private_key)},
                headers=headers,
            )
            certificate = x509.load_pem_x509_certificate(issued["certificate_pem"].encode())
        else:  # the org issues it under its own CA, outside Tabard
            certificate, _ = ca.issue(spiffe_id, key=private_key)
        certificate_path = self.workdir / f"{name}.crt"
        key_path = self.workdir / f"{name}.key"
        certificate_path.write_text(pem(certificate))
        key_path.write_text(key_pem(private_key))
        return Agent(agent["id"], org, spiffe_id, certificate, certificate_path, key_path)

    async def bind(self, org: str, key: str, agent: Agent) -> str:
        headers = {"Authorization": f"Bearer {key}"}
        binding = await self.ok(
            "POST",
            f"/v1/orgs/{org}/bindings",
            json={"agent_id": agent.id, "scope": ["invoices.read"]},
            headers=headers,
        )
        await self.ok("POST", f"/v1/orgs/{org}/bindings/{binding['id']}/approve", headers=headers)
        return str(binding["id"])

    async def close(self) -> None:
        await self.first.aclose()
        await self.second.aclose()


@pytest.fixture
async def operator(deployment: Deployment, tmp_path: Path) -> AsyncIterator[Operator]:
    operator = Operator(deployment, tmp_path)
    yield operator
    await operator.close()


class MutualTls:
    """Each agent's own HTTPS client through the proxies in front of both processes."""

    def __init__(self, first: TlsProxy, second: TlsProxy) -> None:
        self.first, self.second = first, second

    def client(self, proxy: TlsProxy, agent: Agent) -> httpx.AsyncClient:
        context = proxy.client_context(agent.certificate_path, agent.key_path)
        return httpx.AsyncClient(base_url=proxy.url, verify=context, timeout=30)

    async def login(self, agent: Agent, proxy: TlsProxy | None = None) -> httpx.Response:
        async with self.client(proxy or self.first, agent) as http:
            return await http.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials", "client_id": agent.spiffe_id},
            )

    async def token(self, agent: Agent) -> str:
        response = await self.login(agent)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    async def me(self, agent: Agent, token: str, proxy: TlsProxy) -> httpx.Response:
        async with self.client(proxy, agent) as http:
            return await http.get("/v1/me", headers={"Authorization": f"Bearer {token}"})


async def test_trust_scenario(deployment: Deployment, operator: Operator, tmp_path: Path) -> None:
    from tabard.core.clock import SystemClock

    globex_ca = TestCa(SystemClock().now(), name="Globex Root CA")
    acme_key = await operator.onboard_by_join()
    globex_key = await operator.onboard_by_attach(globex_ca)

    bound = await operator.agent("acme", acme_key, "bound-bot")
    revoked = await operator.agent("acme", acme_key, "revoked-bot")
    unbound = await operator.agent("acme", acme_key, "unbound-bot")
    globex_one = await operator.agent("globex", globex_key, "ledger-bot", ca=globex_ca)
    globex_two = await operator.agent("globex", globex_key, "audit-bot", ca=globex_ca)
    await operator.ok(
        "PATCH",
        "/v1/orgs/acme/trust-settings",
        json={"binding_required": True},
        headers={"Authorization": f"Bearer {acme_key}"},
    )
    bindings = {a.id: await operator.bind("acme", acme_key, a) for a in (bound, revoked, unbound)}

    bundle = (await operator.first.get("/pki/orgs/acme/bundle.pem")).text + globex_ca.pem
    first_proxy = TlsProxy(deployment.first.port, bundle, CERT_HEADER, tmp_path)
    second_proxy = TlsProxy(deployment.second.port, bundle, CERT_HEADER, tmp_path)
    async with first_proxy, second_proxy:
        mtls = MutualTls(first_proxy, second_proxy)
        await _bound_agent_calls_the_api(mtls, bound)
        await _revoked_certificate(operator, mtls, revoked, acme_key)
        await _revoked_binding(operator, mtls, unbound, acme_key, bindings[unbound.id])
        await _suspended_org(operator, mtls, globex_one, globex_two, globex_key)
    await _audit_records_every_denial(operator)


async def _bound_agent_calls_the_api(mtls: MutualTls, agent: Agent) -> None:
    """(1) Certificate login over mTLS; the certificate-bound token works on both processes."""
    response = await mtls.login(agent)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "invoices.read"  # the binding's scope
    token = response.json()["access_token"]
    for proxy in (mtls.first, mtls.second):
        me = await mtls.me(agent, token, proxy)
        assert me.status_code == 200, me.text
        assert me.json() == {"kind": "agent", "id": agent.id, "org_id": "acme"}


async def _revoked_certificate(operator: Operator, mtls: MutualTls, agent: Agent, key: str) -> None:
    """(2) Revoked on the first process: the second refuses the old token and the login."""
    token = await mtls.token(agent)
    assert (await mtls.me(agent, token, mtls.second)).status_code == 200
    ca_id = (await operator.ok("GET", "/v1/orgs/acme/cas", headers=_bearer(key)))[0]["id"]
    await operator.ok(
        "POST",
        "/v1/orgs/acme/certificate-revocations",
        json={"ca_id": ca_id, "serial": format(agent.certificate.serial_number, "x")},
        headers=_bearer(key),
    )
    me = await mtls.me(agent, token, mtls.second)
    assert me.status_code == 401, me.text
    login = await mtls.login(agent, mtls.second)
    assert login.status_code == 401, login.text
    assert login.json()["code"] == "CERTIFICATE_REVOKED"
    assert login.json()["error_description"] == "Certificate has been revoked"


async def _revoked_binding(
    operator: Operator, mtls: MutualTls, agent: Agent, key: str, binding_id: str
) -> None:
    """(3) A revoked binding: the live token gets 403 on the other process, the login 401."""
    token = await mtls.token(agent)
    await operator.ok("POST", f"/v1/orgs/acme/bindings/{binding_id}/revoke", headers=_bearer(key))
    me = await mtls.me(agent, token, mtls.second)
    assert me.status_code == 403, me.text
    assert me.json()["code"] == "BINDING_REVOKED"
    login = await mtls.login(agent, mtls.second)
    assert login.status_code == 401, login.text
    assert login.json()["code"] == "BINDING_REVOKED"


async def _suspended_org(
    operator: Operator, mtls: MutualTls, one: Agent, two: Agent, key: str
) -> None:
    """(4) A suspended org: its keys get 403, its agents' tokens and logins are refused."""
    token = await mtls.token(one)
    assert (await mtls.me(one, token, mtls.second)).status_code == 200
    await operator.ok("POST", "/v1/orgs/globex/suspend", headers=ADMIN)
    keyed = await operator.second.get("/v1/orgs/globex", headers=_bearer(key))
    assert keyed.status_code == 403, keyed.text
    assert keyed.json()["code"] == "ORG_SUSPENDED"
    assert (await mtls.me(one, token, mtls.second)).status_code == 401
    for agent in (one, two):
        login = await mtls.login(agent, mtls.second)
        assert login.status_code == 401, login.text
        assert login.json()["code"] == "ORG_SUSPENDED"


async def _audit_records_every_denial(operator: Operator) -> None:
    """(5) The chain verifies, and every refusal above is in it with its reason."""
    verification = await operator.ok("GET", "/v1/audit/verify", headers=ADMIN)
    assert verification["verified"] is True, verification
    reasons: dict[str, set[str]] = {}
    params: dict[str, Any] = {"outcome": "denied", "limit": 200}
    while True:
        page = await operator.ok("GET", "/v1/audit", params=params, headers=ADMIN)
        for event in page["items"]:
            reasons.setdefault(event["action"], set()).add(event["details"]["reason"])
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    assert {"CERTIFICATE_REVOKED", "BINDING_REVOKED", "ORG_SUSPENDED"} <= reasons["token.denied"]
    assert {"INVALID_TOKEN", "BINDING_REVOKED", "ORG_SUSPENDED"} <= reasons["request.denied"]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
