"""Certificate-login benchmark: what an X.509-SVID login costs next to a client secret, beside a
bare-ASGI hello-world on the same server in the same run; one JSON document out.

    python bench/certificates.py --duration 8                 # SQLite + in-process kv
    python bench/certificates.py --backend postgres           # PostgreSQL + Redis

Tabard runs behind a (simulated) TLS-terminating proxy: the load generators connect from
loopback, which is a trusted proxy, and send each agent's certificate in the forwarding header,
exactly what nginx sends after the handshake. Every agent has a Tabard-issued SVID, an approved
binding (the org requires one) and a client secret, so both logins do the same authorization.

Targets: `token_secret` (client_secret_basic; a busy client is served from the 5 s caller
cache), `token_certificate` (tls_client_auth: path validation, SPIFFE ID, revocation, pin and
binding on every request: certificate logins are not cached), `me_certificate` (a
certificate-bound token on GET /v1/me with its certificate), `crl` (a signed CRL of the CA with
`--revoked` entries, made on every request) and `bundle` (the trust domain's SPIFFE bundle).
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from run import REPO_ROOT, LoadPlan, log, machine, publish, row, terminate_on_sigterm
from tokens import (
    DEFAULT_POSTGRES_URL,
    DEFAULT_REDIS_URL,
    RESULTS_DIR,
    Backend,
    ServerKind,
    Spec,
    baseline,
    code_version,
    ensure_postgres_database,
    expect,
    measure,
    reset_backend,
    server_kinds,
    summary,
    tabard,
    tabard_env,
)

CERT_HEADER = "X-Client-Cert"
CAPABILITIES = ["invoices.read", "invoices.write"]
FORM = "application/x-www-form-urlencoded"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per target")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes")
    parser.add_argument("--connections", type=int, default=64, help="connections in total")
    parser.add_argument("--agents", type=int, default=64, help="agents (one per connection)")
    parser.add_argument("--revoked", type=int, default=1000, help="revoked serials in the CRL")
    parser.add_argument("--servers", default="uvicorn:1,uvicorn:2", help="server:workers, ...")
    parser.add_argument(
        "--targets",
        default="token_secret,token_certificate,me_certificate,crl,bundle",
        help="what to measure",
    )
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--database-url", default=DEFAULT_POSTGRES_URL, help="wiped; name has bench"
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="flushed before each server")
    parser.add_argument("--output", type=Path, help="JSON file (default results/certificates-*)")
    args = parser.parse_args()
    if args.backend == "postgres" and "bench" not in args.database_url.rsplit("/", 1)[-1]:
        parser.error("the PostgreSQL database is wiped: its name must contain 'bench'")
    return args


class Fixture:
    """What provisioning made: per-agent headers for each target, and the CA's id."""

    def __init__(self) -> None:
        self.secret_headers: list[dict[str, str]] = []
        self.certificate_headers: list[dict[str, str]] = []
        self.bound_token_headers: list[dict[str, str]] = []
        self.ca_id = ""


def provision(url: str, admin_secret: str, agents: int, revoked: int) -> Fixture:
    """An enterprise org requiring bindings, a generated CA, and `agents` agents, each with an
    approved binding, a client secret and an SVID; `revoked` revoked serials for the CRL."""
    admin = {"Authorization": f"Bearer {admin_secret}"}
    fixture = Fixture()
    with httpx.Client(base_url=url, timeout=120.0, headers=admin) as http:
        expect(
            http.post(
                "/v1/orgs", json={"id": "bench", "display_name": "Bench", "tier": "enterprise"}
            ),
            201,
        )
        fixture.ca_id = expect(http.post("/v1/orgs/bench/cas", json={"source": "generate"}), 201)[
            "id"
        ]
        expect(http.patch("/v1/orgs/bench/trust-settings", json={"binding_required": True}), 200)
        for i in range(agents):
            provision_agent(http, fixture, f"bench-agent-{i}")
        for serial in range(1, revoked + 1):
            body = {"ca_id": fixture.ca_id, "serial": format(serial, "x")}
            expect(http.post("/v1/orgs/bench/certificate-revocations", json=body), 201)
    return fixture


def provision_agent(http: httpx.Client, fixture: Fixture, name: str) -> None:
    agent = expect(
        http.post("/v1/orgs/bench/agents", json={"name": name, "capabilities": CAPABILITIES}), 201
    )
    base = f"/v1/orgs/bench/agents/{agent['id']}"
    binding = expect(
        http.post("/v1/orgs/bench/bindings", json={"agent_id": agent["id"], "scope": CAPABILITIES}),
        201,
    )
    expect(http.post(f"/v1/orgs/bench/bindings/{binding['id']}/approve"), 200)
    credential = expect(http.post(f"{base}/credentials", json={}), 201)
    pair = f"{credential['client_id']}:{credential['client_secret']}".encode()
    fixture.secret_headers.append({"Authorization": "Basic " + base64.b64encode(pair).decode()})
    issued = expect(http.post(f"{base}/certificates", json={"csr_pem": csr()}), 201)
    header = {CERT_HEADER: quote(issued["certificate_pem"])}
    fixture.certificate_headers.append(header)
    # The agent itself logs in with its certificate: no admin credential on this request.
    login = httpx.post(
        f"{http.base_url}/oauth2/token", data={"grant_type": "client_credentials"}, headers=header
    )
    token = expect(login, 200)["access_token"]
    fixture.bound_token_headers.append({"Authorization": f"Bearer {token}", **header})


def csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM).decode()


def specs(fixture: Fixture, targets: list[str]) -> list[Spec]:
    body = "grant_type=client_credentials"
    all_specs = {
        "token_secret": Spec(
            "token_secret",
            "POST",
            "/oauth2/token",
            {"Content-Type": FORM},
            body,
            connection_headers=fixture.secret_headers,
        ),
        "token_certificate": Spec(
            "token_certificate",
            "POST",
            "/oauth2/token",
            {"Content-Type": FORM},
            body,
            connection_headers=fixture.certificate_headers,
        ),
        "me_certificate": Spec(
            "me_certificate", "GET", "/v1/me", connection_headers=fixture.bound_token_headers
        ),
        "crl": Spec("crl", "GET", f"/pki/cas/{fixture.ca_id}/crl"),
        "bundle": Spec("bundle", "GET", "/pki/bundle"),
    }
    return [all_specs[name] for name in targets]


def bench_server(
    kind: ServerKind, backend: Backend, plan: LoadPlan, args: argparse.Namespace, scratch: Path
) -> list[dict[str, Any]]:
    log(f"{kind.label}: baseline /")
    with baseline(kind, scratch) as server:
        base = measure(server, Spec("baseline", "GET", "/"), plan)
    rows = [
        {
            "server": kind.name,
            "backend": backend.label(kind.workers),
            **row("baseline", kind.workers, base, base),
        }
    ]
    reset_backend(backend, kind.workers)
    admin_secret = secrets.token_urlsafe(36)
    env = tabard_env(backend, kind.workers, admin_secret)
    env |= {"TABARD_MTLS_CLIENT_CERT_HEADER": CERT_HEADER, "TABARD_TRUSTED_PROXIES": "127.0.0.1"}
    with tabard(kind, scratch, env) as server:
        log(f"{kind.label}: provisioning {args.agents} agents")
        fixture = provision(server.url, admin_secret, args.agents, args.revoked)
        for spec in specs(fixture, args.targets.split(",")):
            log(f"{kind.label}: tabard {spec.name}")
            figures = measure(server, spec, plan)
            rows.append(
                {
                    "server": kind.name,
                    "backend": backend.label(kind.workers),
                    **row(spec.name, kind.workers, figures, base),
                }
            )
    return rows


def main() -> None:
    args = parse_args()
    terminate_on_sigterm()
    backend = Backend("sqlite", args.redis_url)
    if args.backend == "postgres":
        ensure_postgres_database(args.database_url)
        backend = Backend("postgres", args.redis_url, args.database_url)
    plan = LoadPlan(args.clients, args.connections, args.warmup, args.duration)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tabard-bench-certificates-") as scratch:
        for kind in server_kinds(args.servers):
            rows += bench_server(kind, backend, plan, args, Path(scratch))
    document = {
        "machine": machine(),
        "code": code_version(),
        "duration_s": plan.duration_s,
        "load": {"clients": plan.clients, "connections": plan.connections},
        "agents": args.agents,
        "revoked_serials_in_crl": args.revoked,
        "backend": backend.name,
        "results": rows,
    }
    for line in summary(rows):
        log(line)
    publish(document, args.output or RESULTS_DIR / f"certificates-{backend.name}.json")


if __name__ == "__main__":
    os.chdir(REPO_ROOT)
    main()
