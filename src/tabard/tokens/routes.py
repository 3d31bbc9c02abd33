"""HTTP face of the token service.

`oauth_router` speaks OAuth: form-encoded requests, RFC 6749 §5.2 errors, its own client
authentication (so it is mounted without the API's principal dependency). `router` holds the
org-facing REST routes (token settings, revocations), problem+json like every other route.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from tabard.core.runtime import ActorDep, ContextDep, RuntimeDep, get_runtime
from tabard.tenancy import policy as tenancy_policy
from tabard.tenancy.authentication import authenticate_api_secret
from tabard.tenancy.errors import InvalidCredentials, OrgNotActive, OrgSuspended
from tabard.tokens import discovery, org_revocations, org_settings
from tabard.tokens import policy as tokens_policy
from tabard.tokens.caller import TokenRequest
from tabard.tokens.errors import (
    InsufficientScope,
    InvalidClient,
    InvalidRequest,
    InvalidToken,
    OAuthError,
)
from tabard.tokens.introspection import Requester, introspect, revoke_presented
from tabard.tokens.mtls import certificate_thumbprint, client_certificate_chain
from tabard.tokens.resource import ResourceAuthenticator, presented_token
from tabard.tokens.revocation import (
    list_revocations,
)
from tabard.tokens.schemas import (
    RevocationCreate,
    RevocationOut,
    TokenSettingsOut,
    TokenSettingsUpdate,
)
from tabard.tokens.service import TokenService

oauth_router = APIRouter(tags=["oauth"])
router = APIRouter(tags=["tokens"])

_FORM = "application/x-www-form-urlencoded"
_MAX_FORM_BYTES = 64 * 1024
_MULTI_VALUED = ("resource", "audience")
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_METADATA_CACHE = {"Cache-Control": "public, max-age=3600"}


def token_service(request: Request) -> TokenService:
    service: TokenService = request.app.state.token_service
    return service


def resource_authenticator(request: Request) -> ResourceAuthenticator:
    authenticator: ResourceAuthenticator = request.app.state.resource_authenticator
    return authenticator


def oauth_error(exc: OAuthError) -> JSONResponse:
    """RFC 6749 §5.2: `{"error", "error_description"}`, never cached."""
    body = {"error": exc.error, "error_description": exc.description}
    if exc.code is not None:
        body["code"] = exc.code
    return JSONResponse(body, status_code=exc.status, headers={**_NO_STORE, **exc.headers})


async def _token_request(request: Request) -> TokenRequest:
    """The form of an OAuth request: single-valued parameters (RFC 6749 §3.2) plus the
    repeatable `resource` (RFC 8707) and `audience` (RFC 8693)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != _FORM:
        raise InvalidRequest(f"the request body must be {_FORM}")
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        raise InvalidRequest("the request body is too large")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=False, strict_parsing=False)
    except UnicodeDecodeError:
        raise InvalidRequest("the request body is not UTF-8") from None
    params: dict[str, str] = {}
    multi: dict[str, list[str]] = {name: [] for name in _MULTI_VALUED}
    for name, value in pairs:
        if name in multi:
            multi[name].append(value)
        elif name in params:
            raise InvalidRequest(f"parameter {name!r} is repeated")
        else:
            params[name] = value
    runtime = get_runtime(request)
    chain = client_certificate_chain(request.scope, request.headers, runtime.settings)
    return TokenRequest(
        params=params,
        resources=multi["resource"],
        audiences=multi["audience"],
        authorization=request.headers.get("authorization"),
        dpop_proofs=request.headers.getlist("dpop"),
        certificate_thumbprint=certificate_thumbprint(chain),
        client_certificates=chain,
        request_id=getattr(request.state, "request_id", None),
    )


@oauth_router.post("/oauth2/token")
async def token(request: Request) -> Response:
    """RFC 6749 §3.2: client credentials (§4.4) and token exchange (RFC 8693)."""
    try:
        issued = await token_service(request).token(await _token_request(request))
    except OAuthError as exc:
        return oauth_error(exc)
    return JSONResponse(issued.body, headers={**_NO_STORE, **issued.headers})


@oauth_router.post("/oauth2/introspect")
async def introspect_token(request: Request) -> Response:
    """RFC 7662: is this token active, and what does it say?"""
    try:
        form = await _token_request(request)
        requester = await _requester(request, form)
        answer = await introspect(token_service(request), requester, _required_token(form))
    except OAuthError as exc:
        return oauth_error(exc)
    return JSONResponse(answer, headers=_NO_STORE)


@oauth_router.post("/oauth2/revoke")
async def revoke_token(request: Request, ctx: ContextDep) -> Response:
    """RFC 7009: revoke a token; unknown, invalid or expired tokens are a success too."""
    try:
        form = await _token_request(request)
        requester = await _requester(request, form)
        await revoke_presented(token_service(request), requester, _required_token(form), ctx)
    except OAuthError as exc:
        return oauth_error(exc)
    return Response(status_code=200, headers=_NO_STORE)


@oauth_router.get("/oauth2/userinfo")
async def userinfo(request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    """OIDC Core §5.3: the profile of the agent the access token speaks for."""
    return await _userinfo(request, runtime)


@oauth_router.post("/oauth2/userinfo")
async def userinfo_by_post(request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    """OIDC Core §5.3.1: the same, for clients that send POST."""
    return await _userinfo(request, runtime)


async def _userinfo(request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    presented = presented_token(request, runtime.settings)
    if presented is None:
        raise InvalidToken("send an access token: Authorization: Bearer|DPoP <token>")
    verified = await resource_authenticator(request).authenticate(presented)
    claims = verified.claims
    if "openid" not in str(claims.get("scope", "")).split():
        raise InsufficientScope("userinfo needs a token with the openid scope", scope="openid")
    return await token_service(request).userinfo(claims)


@oauth_router.get("/.well-known/oauth-authorization-server")
async def server_metadata(request: Request, runtime: RuntimeDep) -> Response:
    """RFC 8414 §3: how to talk to this authorization server."""
    return _metadata(request, runtime)


@oauth_router.get("/.well-known/openid-configuration")
async def openid_configuration(request: Request, runtime: RuntimeDep) -> Response:
    """OIDC Discovery §4: the same document, where OpenID clients look for it."""
    return _metadata(request, runtime)


def _metadata(request: Request, runtime: RuntimeDep) -> Response:
    algorithms = sorted(token_service(request).dpop.algorithms)
    document = discovery.metadata(runtime.settings.public_url, algorithms)
    return JSONResponse(document, headers=_METADATA_CACHE)


def _required_token(form: TokenRequest) -> str:
    value = form.params.get("token")
    if not value:
        raise InvalidRequest("the token parameter is required")
    return value


async def _requester(request: Request, form: TokenRequest) -> Requester:
    """A client (token-endpoint authentication), else an org key or the admin (Bearer)."""
    authorization = form.authorization or ""
    if authorization[:7].lower() == "bearer ":
        return await _api_key_requester(request, authorization[7:].strip())
    caller = await token_service(request).authenticate_client(form)
    return Requester(
        org_id=caller.client.org_id,
        client_id=caller.client.client_id,
        agent_id=caller.agent.id,
        agent_did=caller.agent.did,
    )


async def _api_key_requester(request: Request, secret: str) -> Requester:
    runtime = get_runtime(request)
    admin = request.app.state.admin_authenticator
    try:
        async with runtime.database.read_only() as session:
            actor, _ = await authenticate_api_secret(
                session, admin, runtime.secret_key, secret, runtime.clock
            )
    except (InvalidCredentials, OrgSuspended, OrgNotActive):
        raise InvalidClient("the bearer credential is not valid", reason="bad_api_key") from None
    return Requester(org_id=actor.org_id)


# Org-facing REST routes ---------------------------------------------------------------------


@router.get("/v1/orgs/{org_id}/token-settings")
async def get_token_settings(org_id: str, actor: ActorDep, runtime: RuntimeDep) -> TokenSettingsOut:
    tenancy_policy.require_org_access(actor, org_id)
    async with runtime.database.read_only() as session:
        policy = await org_settings.policy_for(session, runtime.settings, org_id)
    return TokenSettingsOut(
        access_token_lifetime_seconds=policy.access_token_lifetime_seconds,
        require_dpop=policy.require_dpop,
    )


@router.patch("/v1/orgs/{org_id}/token-settings")
async def update_token_settings(
    org_id: str, body: TokenSettingsUpdate, request: Request, ctx: ContextDep, runtime: RuntimeDep
) -> TokenSettingsOut:
    tenancy_policy.require_org_access(ctx.actor, org_id)
    async with runtime.database.unit_of_work() as session:
        policy = await org_settings.update_policy(session, ctx, runtime.settings, org_id, body)
    resource_authenticator(request).forget_policy(org_id)
    return TokenSettingsOut(
        access_token_lifetime_seconds=policy.access_token_lifetime_seconds,
        require_dpop=policy.require_dpop,
    )


@router.post("/v1/orgs/{org_id}/token-revocations", status_code=201)
async def create_revocation(
    org_id: str, body: RevocationCreate, ctx: ContextDep, runtime: RuntimeDep
) -> RevocationOut:
    """Revoke every live token of an agent, a credential or a delegation chain of this org."""
    tokens_policy.require_revocation_access(ctx.actor, org_id, body.kind)
    async with runtime.database.unit_of_work() as session:
        row = await org_revocations.revoke_for_org(session, ctx, org_id, body)
    return RevocationOut.model_validate(row)


@router.get("/v1/orgs/{org_id}/token-revocations")
async def get_revocations(org_id: str, actor: ActorDep, runtime: RuntimeDep) -> list[RevocationOut]:
    tenancy_policy.require_org_access(actor, org_id)
    async with runtime.database.read_only() as session:
        rows = await list_revocations(session, org_id, runtime.clock.now())
    return [RevocationOut.model_validate(row) for row in rows]
