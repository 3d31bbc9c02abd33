"""Liveness, readiness and metrics (unauthenticated, except for the optional metrics token)."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tabard import __version__
from tabard.core import metrics
from tabard.core.errors import Unauthenticated
from tabard.core.runtime import Runtime, RuntimeDep
from tabard.signing import service as signing_keys

router = APIRouter(tags=["health"])
READINESS_TIMEOUT_SECONDS = 2.0


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: answers while the process runs, whatever its dependencies do."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Readiness: 200 when the database, kv store, bus and key store answer; 503 otherwise."""
    if runtime.draining:
        return JSONResponse({"status": "draining", "checks": {}}, status_code=503)
    checks = await _run_checks(runtime)
    ready = all(check["status"] == "ok" for check in checks.values())
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


async def _run_checks(runtime: Runtime) -> dict[str, dict[str, Any]]:
    async def keystore() -> None:
        runtime.keystore.check()
        # The master key must also open the stored signing key (a restore without master.key
        # would otherwise surface only when the first card is signed).
        await signing_keys.active_key(
            runtime.database,
            runtime.keystore,
            runtime.clock,
            algorithm=runtime.settings.signing_algorithm,
        )

    probes: dict[str, Callable[[], Awaitable[None]]] = {
        "database": runtime.database.ping,
        "kv": runtime.kv.ping,
        "bus": runtime.bus.ping,
        "keystore": keystore,
    }
    results = await asyncio.gather(*(_check(probe) for probe in probes.values()))
    return dict(zip(probes, results, strict=True))


async def _check(probe: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            await probe()
    except Exception as exc:  # a readiness report names the failure instead of raising it
        return {"status": "error", "detail": f"{type(exc).__name__}: {exc}"[:300]}
    return {"status": "ok"}


@router.get("/metrics")
async def prometheus_metrics(request: Request, runtime: RuntimeDep) -> Response:
    token = runtime.settings.metrics_token
    if token is not None:
        expected = f"Bearer {token.get_secret_value()}"
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthenticated("the metrics endpoint needs TABARD_METRICS_TOKEN as a bearer")
    checked_out, size = runtime.database.pool_status()
    metrics.DB_POOL_CHECKED_OUT.set(checked_out)
    metrics.DB_POOL_SIZE.set(size)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
