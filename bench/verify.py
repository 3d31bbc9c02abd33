"""Local access-token verification: tabard.sdk's verify_jwt against raw ES256, one JSON out.

    python bench/verify.py --duration 3

One process, one thread: `per_cpu_s` (operations per CPU second of this process) is the rate per
core, and the ratios and the target use it; `per_s` is per wall second, lower when other work
shares the machine.

Tokens are ES256 JWTs with the claims Tabard issues (RFC 9068: iss, sub, aud, client_id, scope,
jti, iat, exp, org, agent_did, cnf), signed with joserfc, 1,000 distinct ones in rotation. In the
same run it measures the floor (`cryptography` verifying the same signatures, nothing else) and
joserfc's `jwt.decode`, so the ratios hold across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jwt
from joserfc.jwk import ECKey
from joserfc.jwk import KeySet as JoseKeySet

from run import log, machine, publish, terminate_on_sigterm
from tabard.sdk import KeySet, TokenVerifier, verify_jwt

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "verify.json"
ISSUER = "https://tabard.bench.example"
AUDIENCE = "https://api.bench.example"
TARGET_PER_S = 10_000
TOKENS = 1_000
LIFETIME_S = 900


@dataclass(frozen=True)
class Corpus:
    """The tokens, the JWKS that verifies them, and their raw signatures for the crypto floor."""

    tokens: list[str]
    jwks: dict[str, Any]
    signing_key: ECKey
    raw: list[tuple[bytes, bytes]]  # (DER signature, signing input) per token
    now: float


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per case (median kept)")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="JSON file to write")
    args = parser.parse_args()
    if args.duration <= 0 or args.rounds < 1:
        parser.error("need --duration > 0 and --rounds >= 1")
    return args


def claims(now: float, index: int) -> dict[str, Any]:
    """What Tabard puts in an access token for an agent with a DPoP-bound token."""
    agent = str(uuid.uuid4())
    return {
        "iss": ISSUER,
        "sub": agent,
        "aud": AUDIENCE,
        "client_id": f"tbd_client_{agent.replace('-', '')[:24]}",
        "scope": "agents:read agents:write messages:send tasks:claim",
        "jti": str(uuid.uuid4()),
        "iat": int(now) - index % 60,
        "exp": int(now) + LIFETIME_S,
        "org": "acme-robotics",
        "agent_did": f"did:web:tabard.bench.example:orgs:acme-robotics:agents:{agent}",
        "cnf": {"jkt": base64.urlsafe_b64encode(uuid.uuid4().bytes * 2).decode().rstrip("=")},
    }


def build_corpus() -> Corpus:
    """1,000 tokens signed by the active key of a two-key JWKS (the other one retired)."""
    now = time.time()
    active, retired = ECKey.generate_key("P-256"), ECKey.generate_key("P-256")
    jwks = {"keys": [public_jwk(active), public_jwk(retired)]}
    header = {"alg": "ES256", "typ": "at+jwt", "kid": active.thumbprint()}
    tokens = [
        jwt.encode(header, claims(now, i), active, algorithms=["ES256"]) for i in range(TOKENS)
    ]
    return Corpus(tokens, jwks, active, [raw_signature(t) for t in tokens], now)


def public_jwk(key: ECKey) -> dict[str, Any]:
    return {**key.as_dict(private=False), "kid": key.thumbprint(), "alg": "ES256", "use": "sig"}


def raw_signature(token: str) -> tuple[bytes, bytes]:
    signing_input, _, encoded = token.rpartition(".")
    signature = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    r, s = int.from_bytes(signature[:32]), int.from_bytes(signature[32:])
    return encode_dss_signature(r, s), signing_input.encode()


def rate(operation: Callable[[int], None], duration_s: float, rounds: int) -> dict[str, Any]:
    """Operations per wall second and per CPU second of this process, median of `rounds`."""
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(rounds):
        count, started, cpu_started = 0, time.perf_counter(), time.process_time()
        while (elapsed := time.perf_counter() - started) < duration_s:
            for i in range(TOKENS):
                operation(i)
            count += TOKENS
        walls.append(count / elapsed)
        cpus.append(count / (time.process_time() - cpu_started))
    return figures(walls, cpus)


def figures(walls: list[float], cpus: list[float]) -> dict[str, Any]:
    """Median rates of the rounds, per wall second and per CPU second."""
    return {
        "per_s": round(statistics.median(walls)),
        "per_cpu_s": round(statistics.median(cpus)),
        "rounds_per_s": [round(w) for w in walls],
    }


def case_raw_cryptography(corpus: Corpus) -> Callable[[int], None]:
    public = corpus.signing_key.get_op_key("verify")
    assert isinstance(public, ec.EllipticCurvePublicKey)
    algorithm = ec.ECDSA(hashes.SHA256())

    def operation(i: int) -> None:
        signature, signing_input = corpus.raw[i]
        public.verify(signature, signing_input, algorithm)

    return operation


def case_verify_jwt(corpus: Corpus) -> Callable[[int], None]:
    keys = KeySet.from_jwks(corpus.jwks)

    def operation(i: int) -> None:
        verify_jwt(corpus.tokens[i], keys, issuer=ISSUER, audience=AUDIENCE, now=time.time())

    return operation


def case_joserfc_decode(corpus: Corpus) -> Callable[[int], None]:
    """joserfc's signature check and parse only (its claim checks are a separate call)."""
    keys = JoseKeySet.import_key_set(corpus.jwks)  # type: ignore[arg-type]

    def operation(i: int) -> None:
        jwt.decode(corpus.tokens[i], keys, algorithms=["ES256"])

    return operation


def case_joserfc_decode_validate(corpus: Corpus) -> Callable[[int], None]:
    """joserfc with the same claim checks verify_jwt makes (iss, aud, exp, nbf, iat, typ)."""
    keys = JoseKeySet.import_key_set(corpus.jwks)  # type: ignore[arg-type]
    registry = jwt.JWTClaimsRegistry(
        leeway=30,
        iss={"essential": True, "value": ISSUER},
        aud={"value": AUDIENCE},
        exp={"essential": True},
    )

    def operation(i: int) -> None:
        token = jwt.decode(corpus.tokens[i], keys, algorithms=["ES256"])
        if token.header.get("typ") != "at+jwt":
            raise ValueError("typ")
        registry.validate(token.claims)

    return operation


def token_verifier_rate(corpus: Corpus, duration_s: float, rounds: int) -> dict[str, Any]:
    """`await TokenVerifier.verify` with its JWKS cached (fetched once over loopback HTTP); the
    cost of awaiting a coroutine is part of what is measured."""

    async def measure(jwks_uri: str) -> dict[str, Any]:
        async with TokenVerifier(ISSUER, audience=AUDIENCE, jwks_uri=jwks_uri) as verifier:
            await verifier.key_set()
            walls: list[float] = []
            cpus: list[float] = []
            for _ in range(rounds):
                count, started, cpu_started = 0, time.perf_counter(), time.process_time()
                while (elapsed := time.perf_counter() - started) < duration_s:
                    for token in corpus.tokens:
                        await verifier.verify(token)
                    count += TOKENS
                walls.append(count / elapsed)
                cpus.append(count / (time.process_time() - cpu_started))
            return figures(walls, cpus)

    with jwks_server(corpus.jwks) as jwks_uri:
        return asyncio.run(measure(jwks_uri))


@contextmanager
def jwks_server(jwks: dict[str, Any]) -> Iterator[str]:
    """A loopback HTTP server answering the JWKS; yields its URL."""
    body = json.dumps(jwks).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/jwk-set+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    """Measure every case, print the JSON document and write it to --output."""
    args = parse_args()
    terminate_on_sigterm()
    corpus = build_corpus()
    load_before = os.getloadavg()[0]
    for operation in (case_verify_jwt(corpus), case_joserfc_decode_validate(corpus)):
        operation(0)  # every case must accept the tokens before anything is timed
    cases = {
        "raw_cryptography_es256": case_raw_cryptography,
        "verify_jwt": case_verify_jwt,
        "joserfc_jwt_decode": case_joserfc_decode,
        "joserfc_jwt_decode_and_validate": case_joserfc_decode_validate,
    }
    results: dict[str, dict[str, Any]] = {}
    for name, build in cases.items():
        log(f"measuring {name}")
        results[name] = rate(build(corpus), args.duration, args.rounds)
    log("measuring token_verifier")
    results["token_verifier_cached"] = token_verifier_rate(corpus, args.duration, args.rounds)
    document = summary(results, args, len(corpus.tokens[0]))
    document["loadavg_1m"] = {"before": load_before, "after": os.getloadavg()[0]}
    publish(document, args.output)


def summary(
    results: dict[str, dict[str, Any]], args: argparse.Namespace, token_bytes: int
) -> dict[str, Any]:
    """The figures plus ratios against the crypto floor and the target verdict."""
    # Per CPU second of this single-threaded process = per core, even when other work on the
    # machine takes wall time from it (per_s shows that share).
    floor = results["raw_cryptography_es256"]["per_cpu_s"]
    ours = results["verify_jwt"]["per_cpu_s"]
    joserfc = results["joserfc_jwt_decode"]["per_cpu_s"]
    return {
        "machine": machine(),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "token": {"alg": "ES256", "bytes": token_bytes, "distinct": TOKENS},
        "results": results,
        "ratio_verify_jwt_to_raw": round(ours / floor, 3),
        "ratio_verify_jwt_to_joserfc_decode": round(ours / joserfc, 2),
        "overhead_us_per_token": round(1e6 / ours - 1e6 / floor, 1),
        "target_per_s": TARGET_PER_S,
        "meets_target": ours >= TARGET_PER_S,
    }


if __name__ == "__main__":
    main()
