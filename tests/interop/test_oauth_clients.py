"""Third-party OAuth clients against a real `tabard serve`: Authlib obtains tokens (RFC 6749
§4.4 with client_secret_basic, RFC 7523 private_key_jwt) and PyJWT verifies them from our RFC 8414
metadata alone, across a signing-key rotation and an emergency revocation."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

import authlib.deprecate  # noqa: F401 - Authlib installs its warning filter here, before ours
import httpx
import jwt
import pytest
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc.jwk import ECKey

from tests.interop.oauth_support import ORG, Deployment, run_deployment


class FiveMinuteAssertion(PrivateKeyJWT):  # type: ignore[misc]
    """Authlib's assertions live an hour by default; Tabard accepts at most five minutes
    (RFC 7523 §3 leaves the bound to the server), so the client asks for five."""

    def sign(self, auth: Any, token_endpoint: str) -> Any:
        self.claims = {"exp": int(time.time()) + 300}  # a fresh dict: Authlib adds the jti to it
        return super().sign(auth, token_endpoint)


with warnings.catch_warnings():
    # Authlib prefers the httpx2 package and warns once, at import, that it falls back to httpx:
    # the client Tabard's users have (and that the SDK uses) is the one this test drives.
    warnings.filterwarnings("ignore", "The httpx module is deprecated", DeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Client, OAuthError


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from run_deployment(tmp_path_factory)


def metadata(deployment: Deployment) -> dict[str, Any]:
    """RFC 8414 §3: the only thing a verifier is told about us."""
    response = httpx.get(f"{deployment.issuer}/.well-known/oauth-authorization-server")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def jwk_client(document: dict[str, Any]) -> jwt.PyJWKClient:
    # PyJWT waits 30 s between refetches for unknown kids by default; the test would wait that
    # long for the new key. Zero keeps the refetch-on-unknown-kid behaviour, without the wait.
    return jwt.PyJWKClient(document["jwks_uri"], cooldown_duration=0)


def verify(token: str, keys: jwt.PyJWKClient, document: dict[str, Any]) -> dict[str, Any]:
    """jwt.decode as a resource server would: key by kid, algorithms, issuer and audience
    from the metadata (RFC 9068 §4)."""
    claims: dict[str, Any] = jwt.decode(
        token,
        keys.get_signing_key_from_jwt(token).key,
        algorithms=document["id_token_signing_alg_values_supported"],
        audience=document["issuer"],
        issuer=document["issuer"],
    )
    return claims


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


class TestAuthlibObtainsTokens:
    def test_client_secret_basic(self, deployment: Deployment) -> None:
        client = deployment.secret_client("basic-bot")
        with OAuth2Client(
            client.client_id,
            client.client_secret,
            token_endpoint_auth_method="client_secret_basic",
        ) as oauth:
            token = oauth.fetch_token(deployment.token_endpoint, grant_type="client_credentials")
            me = oauth.get(f"{deployment.issuer}/v1/me")  # Authlib sends it as Bearer
        assert token["token_type"] == "Bearer"
        document = metadata(deployment)
        claims = verify(token["access_token"], jwk_client(document), document)
        assert (claims["sub"], claims["client_id"]) == (client.agent_id, client.client_id)
        assert me.status_code == 200, me.text
        assert me.json()["id"] == client.agent_id

    async def test_private_key_jwt_with_an_es256_key(self, deployment: Deployment) -> None:
        client = deployment.key_client("key-bot")
        async with AsyncOAuth2Client(
            client.client_id, client.private_key, token_endpoint_auth_method="private_key_jwt"
        ) as oauth:
            assertion = FiveMinuteAssertion(deployment.token_endpoint, alg="ES256")
            oauth.register_client_auth_method(assertion)
            token = await oauth.fetch_token(
                deployment.token_endpoint, grant_type="client_credentials"
            )
        document = metadata(deployment)
        claims = verify(token["access_token"], jwk_client(document), document)
        assert (claims["sub"], claims["client_id"]) == (client.agent_id, client.client_id)
        assert claims["org"] == ORG

    def test_an_assertion_signed_by_an_unregistered_key_is_invalid_client(
        self, deployment: Deployment
    ) -> None:
        client = deployment.key_client("impostor-bot")
        stranger = ECKey.generate_key("P-256", parameters={"alg": "ES256"}, auto_kid=True)
        with OAuth2Client(
            client.client_id, stranger, token_endpoint_auth_method="private_key_jwt"
        ) as oauth:
            assertion = FiveMinuteAssertion(deployment.token_endpoint, alg="ES256")
            oauth.register_client_auth_method(assertion)
            with pytest.raises(OAuthError) as refused:
                oauth.fetch_token(deployment.token_endpoint, grant_type="client_credentials")
        assert refused.value.error == "invalid_client"


class TestPyJWKClientVerifies:
    def test_tokens_before_and_after_a_rotation(self, deployment: Deployment) -> None:
        client = deployment.secret_client("rotation-bot")
        document = metadata(deployment)
        keys = jwk_client(document)
        old_token = deployment.access_token(client)
        assert verify(old_token, keys, document)["sub"] == client.agent_id

        rotation = deployment.rotate_signing_key()
        assert rotation["previous_kid"] == kid_of(old_token)

        # The retired key stays published: a verifier that starts now still accepts the old token.
        assert verify(old_token, jwk_client(document), document)["sub"] == client.agent_id
        new_token = deployment.access_token(client)
        assert kid_of(new_token) == rotation["key"]["kid"] != kid_of(old_token)
        # The first verifier holds a set without the new kid: it must refetch, then accept.
        assert verify(new_token, keys, document)["sub"] == client.agent_id
        assert deployment.introspect(old_token)["active"] is True

    def test_revoke_previous_ends_the_old_tokens(self, deployment: Deployment) -> None:
        client = deployment.secret_client("emergency-bot")
        document = metadata(deployment)
        old_token = deployment.access_token(client)
        assert verify(old_token, jwk_client(document), document)["sub"] == client.agent_id

        rotation = deployment.rotate_signing_key(revoke_previous=True)
        assert kid_of(old_token) in rotation["revoked_kids"]

        with pytest.raises(jwt.PyJWKClientError):  # the key has left the published set
            verify(old_token, jwk_client(document), document)
        assert deployment.introspect(old_token) == {"active": False}
        me = httpx.get(
            f"{deployment.issuer}/v1/me", headers={"Authorization": f"Bearer {old_token}"}
        )
        assert me.status_code == 401
        assert 'error="invalid_token"' in me.headers["www-authenticate"]
        new_token = deployment.access_token(client)
        assert verify(new_token, jwk_client(document), document)["sub"] == client.agent_id
