"""The composition root: builds the runtime from settings and mounts every domain router."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware

from tabard import __version__
from tabard.api.health import router as health_router
from tabard.api.hot_routes import HotRoutes
from tabard.api.middleware import RequestContextMiddleware
from tabard.api.principals import optional_principal, require_agent_principal, require_principal
from tabard.api.problems import install_problem_handlers
from tabard.audit.jobs import CHAIN_CHECK_JOB, check_chain_once
from tabard.audit.routes import router as audit_router
from tabard.core import keyfiles
from tabard.core.bus import EventBus, create_bus
from tabard.core.clock import Clock, SystemClock
from tabard.core.config import Settings, load_settings
from tabard.core.db import Database, create_engine
from tabard.core.jobs import run_periodic
from tabard.core.keystore import KeyStore
from tabard.core.kv import KeyValueStore, create_kv
from tabard.core.logging import configure_logging
from tabard.core.runtime import Runtime
from tabard.core.singleflight import SingleFlight
from tabard.core.tracing import request_spans
from tabard.credentials import service as credentials_service
from tabard.credentials.jobs import EXPIRY_GAUGE_JOB, update_expiring_gauge_once
from tabard.credentials.routes import router as credentials_router
from tabard.events import service as events_service
from tabard.events.routes import router as events_router
from tabard.limits.routes import router as limits_router
from tabard.operations import service as operations_service
from tabard.operations.routes import HEARTBEAT_PATH, enrollment_router, heartbeat_endpoint
from tabard.operations.routes import agent_router as agent_operations_router
from tabard.operations.routes import router as operations_router
from tabard.pki import jobs as pki_jobs
from tabard.pki import revocations as pki_revocations
from tabard.pki import service as pki_service
from tabard.pki.routes import public_router as pki_public_router
from tabard.pki.routes import router as pki_router
from tabard.registry import service as registry_service
from tabard.registry.routes import public_router as registry_public_router
from tabard.registry.routes import router as registry_router
from tabard.signing import service as signing_service
from tabard.signing.jobs import KEY_ROTATION_CHECK_INTERVAL_SECONDS, KEY_ROTATION_JOB, rotate_if_due
from tabard.signing.routes import public_router as keys_public_router
from tabard.signing.routes import router as keys_router
from tabard.tenancy import service as tenancy_service
from tabard.tenancy.authentication import AdminAuthenticator
from tabard.tenancy.routes import router as tenancy_router
from tabard.tokens import caller_cache, revocation
from tabard.tokens.resource import ResourceAuthenticator
from tabard.tokens.routes import oauth_router
from tabard.tokens.routes import router as tokens_router
from tabard.tokens.routes import token as token_endpoint
from tabard.tokens.service import TokenService
from tabard.trust import service as trust_service
from tabard.trust.routes import public_router as onboarding_router
from tabard.trust.routes import router as trust_router


def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    kv: KeyValueStore | None = None,
    bus: EventBus | None = None,
) -> Runtime:
    clock = clock or SystemClock()
    return Runtime(
        settings=settings,
        clock=clock,
        database=Database(create_engine(settings)),
        kv=kv or create_kv(settings.kv_backend, settings.redis_url, clock),
        bus=bus
        or create_bus(
            settings.bus_backend,
            settings.nats_url,
            clock,
            stream=settings.bus_stream,
            subjects_prefix=settings.bus_subjects_prefix,
            stream_max_age_seconds=settings.bus_stream_max_age_seconds,
        ),
        keystore=KeyStore(_secret(settings, "master_key", "master.key")),
        secret_key=_secret(settings, "secret_key", "secret.key"),
    )


def _secret(settings: Settings, name: str, filename: str) -> bytes:
    configured = getattr(settings, name)
    if configured is not None:
        return bytes(configured.get_secret_value(), "utf-8")
    return keyfiles.load_or_create(settings.data_dir / filename)


def create_app(settings: Settings, *, runtime: Runtime | None = None) -> FastAPI:
    """The ASGI app for `settings`; tests may pass a prepared `runtime` (frozen clock, etc.)."""
    runtime = runtime or build_runtime(settings)
    app = FastAPI(
        title="Tabard",
        version=__version__,
        lifespan=_lifespan,
        docs_url="/docs",
        redoc_url=None,
        # Our middleware makes the one request span (with propagation and our log ids);
        # FastAPI's native spans and metrics would double the work on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    app.state.admin_authenticator = AdminAuthenticator(runtime.secret_key, runtime.clock)
    app.state.org_tiers = {}
    app.state.org_tier_reads = SingleFlight()
    app.state.token_service = TokenService(runtime)
    app.state.resource_authenticator = ResourceAuthenticator(app.state.token_service)
    app.state.operations = operations_service.Operations.build(
        runtime.database, runtime.clock, settings, runtime.bus
    )
    app.state.crls = pki_revocations.CrlCache()
    app.state.events = events_service.Events(
        runtime.database, runtime.bus, runtime.keystore, settings, runtime.clock
    )
    install_problem_handlers(app)
    app.include_router(health_router)
    # OAuth endpoints authenticate clients their own way (RFC 6749 §2.3), not as API principals.
    # Mounted first: the token endpoint is the hottest route and routes are matched in order.
    app.include_router(oauth_router)
    # Domain routers carry their full /v1 prefix so route templates (metrics, logs) are complete.
    for domain_router in (
        tenancy_router,
        audit_router,
        registry_router,
        credentials_router,
        limits_router,
        tokens_router,
        keys_router,
        pki_router,
        trust_router,
        operations_router,
        events_router,
    ):
        app.include_router(domain_router, dependencies=[Depends(require_principal)])
    app.include_router(agent_operations_router, dependencies=[Depends(require_agent_principal)])
    # Registration presents a registration token, not a principal: the route checks it.
    app.include_router(enrollment_router)

    for public_router in (
        registry_public_router,
        keys_public_router,
        pki_public_router,
        onboarding_router,
    ):
        app.include_router(public_router, dependencies=[Depends(optional_principal)])
    wire_domain_hooks()
    # Innermost of our middleware: the token endpoint and heartbeats skip FastAPI's router.
    hot = {("POST", "/oauth2/token"): token_endpoint, ("POST", HEARTBEAT_PATH): _heartbeat}
    app.add_middleware(HotRoutes, routes=hot)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(
        RequestContextMiddleware,
        spans=request_spans(),
        quiet_routes=frozenset({("POST", HEARTBEAT_PATH)}),
    )
    return app


async def _heartbeat(request: Request) -> Response:
    """The agent's principal as for every agent call, then the heartbeat itself."""
    await require_agent_principal(request)
    return await heartbeat_endpoint(request)


def wire_domain_hooks() -> None:
    """Let higher domains act inside lower domains' transactions (see `core.hooks`)."""
    tenancy_service.before_org_delete.register(registry_service.refuse_org_delete_with_agents)
    registry_service.agent_retired.register(credentials_service.revoke_all_for_agent)
    # Revocation bites at once: whatever disables an agent, credential, org or key ends its tokens.
    registry_service.agent_retired.register(revocation.revoke_agent_tokens)
    registry_service.agent_suspended.register(revocation.revoke_agent_tokens)
    credentials_service.credential_revoked.register(revocation.revoke_client_tokens)
    tenancy_service.org_suspended.register(revocation.revoke_org_tokens)
    signing_service.keys_revoked.register(revocation.revoke_key_tokens)
    credentials_service.secret_rotated.register(caller_cache.forget_rotated_secret)
    # Certificates: a decommissioned agent's are revoked; revoking one, or replacing its CA,
    # ends the tokens issued from it; a withdrawn binding ends the agent's tokens (with 403).
    registry_service.agent_retired.register(pki_revocations.revoke_agent_certificates)
    pki_service.certificate_revoked.register(revocation.revoke_certificate_tokens)
    pki_service.ca_replaced.register(revocation.revoke_ca_tokens)
    pki_service.pin_changed.register(caller_cache.forget_pinned_certificate)
    trust_service.binding_withdrawn.register(revocation.revoke_unbound_agent_tokens)


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` and worker processes: settings from the environment."""
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    runtime: Runtime = app.state.runtime
    _mark_draining_on_sigterm(runtime)
    settings, database, clock = runtime.settings, runtime.database, runtime.clock
    # Every process exports its own gauges, so every process computes them (not one leader).
    gauges: list[tuple[str, float, Callable[[], Awaitable[object]]]] = [
        (
            CHAIN_CHECK_JOB,
            settings.audit_verify_interval_seconds,
            lambda: check_chain_once(database),
        ),
        (
            EXPIRY_GAUGE_JOB,
            settings.credential_expiry_check_interval_seconds,
            lambda: update_expiring_gauge_once(database, clock),
        ),
        (
            pki_jobs.EXPIRY_GAUGE_JOB,
            settings.credential_expiry_check_interval_seconds,
            lambda: pki_jobs.update_expiring_gauge_once(database, clock),
        ),
    ]
    jobs = [
        asyncio.create_task(run_periodic(database, clock, name, interval, job, exclusive=False))
        for name, interval, job in gauges
    ]
    # One leader across replicas rotates the signing key when due.
    keystore = runtime.keystore
    jobs.append(
        asyncio.create_task(
            run_periodic(
                database,
                clock,
                KEY_ROTATION_JOB,
                KEY_ROTATION_CHECK_INTERVAL_SECONDS,
                lambda: rotate_if_due(database, keystore, settings, clock),
                exclusive=True,
            )
        )
    )
    operations = app.state.operations
    await operations.signals.start()
    # Every process flushes the heartbeats it absorbed; one leader announces presence changes
    # and persists expired commands and lapsed leases.
    jobs.append(
        asyncio.create_task(
            run_periodic(
                database,
                clock,
                operations_service.HEARTBEAT_FLUSH_JOB,
                settings.heartbeat_flush_seconds,
                operations.flush_heartbeats,
                exclusive=False,
            )
        )
    )
    for name, interval, job in (
        (
            operations_service.PRESENCE_JOB,
            settings.presence_check_seconds,
            operations.announce_presence,
        ),
        (
            operations_service.COMMAND_SWEEP_JOB,
            settings.command_sweep_seconds,
            operations.sweep_commands,
        ),
    ):
        jobs.append(
            asyncio.create_task(run_periodic(database, clock, name, interval, job, exclusive=True))
        )
    # Events: one leader relays the outbox to the bus and makes the webhook deliveries, and one
    # forgets what is past retention; every process sends the deliveries that are due.
    events = app.state.events
    jobs.append(asyncio.create_task(events.relay_forever()))
    jobs.append(
        asyncio.create_task(events.sender.run_forever(settings.webhook_delivery_interval_seconds))
    )
    jobs.append(
        asyncio.create_task(
            run_periodic(
                database,
                clock,
                events_service.RETENTION_JOB,
                events_service.RETENTION_INTERVAL_SECONDS,
                events.sweep,
                exclusive=True,
            )
        )
    )
    # One leader raises `certificate.expiring` once per certificate.
    jobs.append(
        asyncio.create_task(
            run_periodic(
                database,
                clock,
                pki_jobs.EXPIRY_EVENTS_JOB,
                settings.credential_expiry_check_interval_seconds,
                lambda: pki_jobs.announce_expiring_once(database, clock),
                exclusive=True,
            )
        )
    )
    # The objects built at start-up live for the whole process; leaving them out of the cyclic
    # collector's scans keeps its full collections (~100 ms pauses under load) short.
    gc.freeze()
    try:
        yield
    finally:
        for job in jobs:
            job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*jobs, return_exceptions=True)
        await operations.signals.stop()
        await events.close()
        with contextlib.suppress(Exception):  # the last beats; a lost flush costs one interval
            await operations.flush_heartbeats()
        await app.state.token_service.close()
        await runtime.kv.close()
        await runtime.bus.close()
        await runtime.database.close()


def _mark_draining_on_sigterm(runtime: Runtime) -> None:
    """Chain onto the server's SIGTERM handler so /readyz says `draining` while requests finish."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:
        return
    if not callable(previous):
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> Any:
        runtime.draining = True
        return previous(signum, frame)

    with contextlib.suppress(ValueError):  # not the main thread: no signal handling to chain
        signal.signal(signal.SIGTERM, on_sigterm)
