"""The platform admin's signing-key routes, and the JWKS's cache headers (ETag, 304, max-age)."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest

from tabard.core.clock import FrozenClock
from tabard.core.config import Settings
from tabard.core.runtime import Runtime
from tabard.signing import service as keys
from tabard.signing.routes import JWKS_MAX_AGE_SECONDS
from tests.conftest import ADMIN, bearer, create_org, create_org_key
from tests.signing.support import active, rotate

ROTATE = "/v1/admin/signing-keys/rotate"
LIST = "/v1/admin/signing-keys"
JWKS = "/.well-known/jwks.json"
_LISTED_FIELDS = {
    "kid",
    "alg",
    "status",
    "created_at",
    "retired_at",
    "publish_until",
    "revoked_at",
}


class TestRotateRoute:
    async def test_admin_rotates_and_the_previous_key_retires(
        self, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        old = await active(runtime)
        response = await client.post(ROTATE, json={"algorithm": "Ed25519"}, headers=ADMIN)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["key"]["alg"] == "Ed25519"
        assert body["key"]["status"] == "active"
        assert body["previous_kid"] == old.kid
        assert body["revoked_kids"] == []
        window = runtime.settings.access_token_max_lifetime_seconds + 120
        assert datetime.fromisoformat(body["previous_publish_until"]) == clock.now() + timedelta(
            seconds=window
        )
        assert (await active(runtime)).kid == body["key"]["kid"]

    async def test_an_empty_body_rotates_with_the_configured_algorithm(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        response = await client.post(ROTATE, headers=ADMIN)
        assert response.status_code == 200, response.text
        assert response.json()["key"]["alg"] == runtime.settings.signing_algorithm

    async def test_revoke_previous_answers_the_revoked_kids(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        old = await active(runtime)
        response = await client.post(ROTATE, json={"revoke_previous": True}, headers=ADMIN)
        assert response.json()["revoked_kids"] == [old.kid]
        assert response.json()["previous_publish_until"] is None
        kids = [key["kid"] for key in (await client.get(JWKS)).json()["keys"]]
        assert kids == [response.json()["key"]["kid"]]

    @pytest.mark.parametrize("algorithm", ["HS256", "none", "es256k", 5])
    async def test_an_unknown_algorithm_is_422(
        self, client: httpx.AsyncClient, algorithm: object
    ) -> None:
        response = await client.post(ROTATE, json={"algorithm": algorithm}, headers=ADMIN)
        assert response.status_code == 422
        assert response.json()["code"] == "VALIDATION_FAILED"
        assert "algorithm" in response.text

    async def test_unknown_fields_are_422(self, client: httpx.AsyncClient) -> None:
        response = await client.post(ROTATE, json={"revoke": True}, headers=ADMIN)
        assert response.status_code == 422

    async def test_an_org_key_is_403_and_nothing_rotates(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        old = await active(runtime)
        await create_org(client)
        org_key = bearer(await create_org_key(client))
        response = await client.post(ROTATE, json={"revoke_previous": True}, headers=org_key)
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "NOT_PERMITTED"
        assert (await client.get(LIST, headers=org_key)).status_code == 403
        assert (await active(runtime)).kid == old.kid

    async def test_anonymous_is_401(self, client: httpx.AsyncClient) -> None:
        assert (await client.post(ROTATE, json={})).status_code == 401
        assert (await client.get(LIST)).status_code == 401


class TestListRoute:
    async def test_lists_every_key_with_its_window_and_no_private_material(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        first = await active(runtime)
        second = (await rotate(runtime)).key
        third = await rotate(runtime, revoke_previous=True)
        response = await client.get(LIST, headers=ADMIN)
        assert response.status_code == 200
        listed = {key["kid"]: key for key in response.json()}
        assert set(listed) == {first.kid, second.kid, third.key.kid}
        for key in listed.values():
            assert set(key) == _LISTED_FIELDS
        assert listed[third.key.kid]["status"] == "active"
        assert listed[first.kid]["status"] == "revoked"
        assert listed[first.kid]["publish_until"] is not None
        assert listed[second.kid]["revoked_at"] is not None


class TestJwksCaching:
    async def test_etag_and_304_on_if_none_match(self, client: httpx.AsyncClient) -> None:
        first = await client.get(JWKS)
        etag = first.headers["etag"]
        assert etag.startswith('"')
        again = await client.get(JWKS, headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert "max-age" in again.headers["cache-control"]
        weak_in_list = await client.get(JWKS, headers={"If-None-Match": f'"other", W/{etag}'})
        assert weak_in_list.status_code == 304
        other = await client.get(JWKS, headers={"If-None-Match": '"stale"'})
        assert other.status_code == 200
        assert other.json() == first.json()

    async def test_a_rotation_changes_the_etag(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        etag = (await client.get(JWKS)).headers["etag"]
        await rotate(runtime)
        response = await client.get(JWKS, headers={"If-None-Match": etag})
        assert response.status_code == 200
        assert response.headers["etag"] != etag
        assert len(response.json()["keys"]) == 2

    async def test_max_age_is_short_without_retired_keys(self, client: httpx.AsyncClient) -> None:
        response = await client.get(JWKS)
        assert response.headers["cache-control"] == f"public, max-age={JWKS_MAX_AGE_SECONDS}"

    async def test_max_age_never_outlasts_a_retired_keys_window(
        self, settings: Settings, client: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock
    ) -> None:
        await active(runtime)
        short = settings.model_copy(update={"access_token_max_lifetime_seconds": 60})
        await rotate(runtime, short)
        window = 60 + int(keys.RETIREMENT_LEEWAY.total_seconds())
        assert window < JWKS_MAX_AGE_SECONDS
        response = await client.get(JWKS)
        assert response.headers["cache-control"] == f"public, max-age={window}"
        clock.advance(window - 10)
        assert (await client.get(JWKS)).headers["cache-control"] == "public, max-age=10"
        clock.advance(10)
        response = await client.get(JWKS)
        assert len(response.json()["keys"]) == 1
        assert response.headers["cache-control"] == f"public, max-age={JWKS_MAX_AGE_SECONDS}"
