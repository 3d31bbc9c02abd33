"""DPoP proofs (RFC 9449) built by joserfc and PyJWT, never by our own code, against a real
`tabard serve`: a proof binds the token (§5, §6) and authorizes an API call (§7); each mutation
of §4.3's checks is refused with `invalid_dpop_proof` (400 at the token endpoint, §5; 401 with
`WWW-Authenticate: DPoP` at the API, §7.1)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.interop.oauth_support import Deployment, SecretClient, run_deployment

MAX_PROOF_AGE_SECONDS = 60  # the server's default acceptance window for `iat`


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from run_deployment(tmp_path_factory)


def ath_of(token: str) -> str:
    """base64url(SHA-256(token)), RFC 9449 §4.2."""
    digest = hashlib.sha256(token.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def proof_claims(htm: str, htu: str, access_token: str | None) -> dict[str, Any]:
    """The claims of a valid proof for a request (RFC 9449 §4.2), `ath` when a token rides along."""
    claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16),
        "htm": htm,
        "htu": htu,
        "iat": int(time.time()),
    }
    if access_token is not None:
        claims["ath"] = ath_of(access_token)
    return claims


@dataclass(frozen=True)
class JoserfcSigner:
    """Signs proofs with joserfc; the header carries the public key unless told otherwise."""

    key: ECKey

    @property
    def thumbprint(self) -> str:
        return self.key.thumbprint()  # RFC 7638, SHA-256

    def sign(self, claims: dict[str, Any], *, jwk: dict[str, Any] | None = None) -> str:
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk or self.key.as_dict(private=False)}
        return jwt.encode(header, claims, self.key)


@dataclass(frozen=True)
class PyJWTSigner:
    key: ec.EllipticCurvePrivateKey

    @property
    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = pyjwt.algorithms.ECAlgorithm.to_jwk(
            self.key.public_key(), as_dict=True
        )
        return jwk

    @property
    def thumbprint(self) -> str:
        return ECKey.import_key(self.public_jwk).thumbprint()

    def sign(self, claims: dict[str, Any]) -> str:
        headers = {"typ": "dpop+jwt", "jwk": self.public_jwk}
        return pyjwt.encode(claims, self.key, algorithm="ES256", headers=headers)


def new_client(deployment: Deployment) -> SecretClient:
    return deployment.secret_client(f"dpop-{uuid.uuid4().hex[:12]}")


def bound_token(deployment: Deployment, client: SecretClient, proof: str) -> dict[str, Any]:
    response = deployment.token(client, dpop=proof)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["token_type"] == "DPoP"
    return body


def call_me(deployment: Deployment, token: str, proof: str) -> httpx.Response:
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
    return httpx.get(f"{deployment.issuer}/v1/me", headers=headers)


class Target:
    """Where a proof goes: its request (htm, htu), how to send it, how a refusal looks."""

    htm: str
    htu: str
    access_token: str | None = None

    def __init__(self, deployment: Deployment, signer: JoserfcSigner) -> None:
        self.deployment = deployment
        self.signer = signer
        self.client = new_client(deployment)

    def proof(self, **mutations: Any) -> str:
        """A valid proof for this target, signed after `mutations` replaced some claims."""
        claims = proof_claims(self.htm, self.htu, self.access_token)
        return self.signer.sign({**claims, **mutations})

    def send(self, proof: str) -> httpx.Response:
        raise NotImplementedError

    def assert_accepted(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.text

    def assert_refused(self, response: httpx.Response, reason: str) -> None:
        """Refused as `invalid_dpop_proof`, for `reason` (a word of the error description)."""
        raise NotImplementedError


class TokenEndpoint(Target):
    htm = "POST"

    def __init__(self, deployment: Deployment, signer: JoserfcSigner) -> None:
        super().__init__(deployment, signer)
        self.htu = deployment.token_endpoint

    def send(self, proof: str) -> httpx.Response:
        return self.deployment.token(self.client, dpop=proof)

    def assert_refused(self, response: httpx.Response, reason: str) -> None:
        assert response.status_code == 400, response.text
        error = response.json()
        assert error["error"] == "invalid_dpop_proof"
        assert reason in error["error_description"]


class ProtectedResource(Target):
    htm = "GET"

    def __init__(self, deployment: Deployment, signer: JoserfcSigner) -> None:
        super().__init__(deployment, signer)
        self.htu = f"{deployment.issuer}/v1/me"
        binding = signer.sign(proof_claims("POST", deployment.token_endpoint, None))
        self.access_token = bound_token(deployment, self.client, binding)["access_token"]

    def send(self, proof: str) -> httpx.Response:
        assert self.access_token is not None
        return call_me(self.deployment, self.access_token, proof)

    def assert_refused(self, response: httpx.Response, reason: str) -> None:
        assert response.status_code == 401, response.text
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("DPoP ")
        assert 'error="invalid_dpop_proof"' in challenge
        assert reason in challenge.partition("error_description=")[2]


@pytest.fixture
def signer() -> JoserfcSigner:
    return JoserfcSigner(ECKey.generate_key("P-256"))


@pytest.fixture(params=["token_endpoint", "api"])
def target(request: pytest.FixtureRequest, deployment: Deployment, signer: JoserfcSigner) -> Target:
    kind = TokenEndpoint if request.param == "token_endpoint" else ProtectedResource
    return kind(deployment, signer)


@pytest.fixture
def api(deployment: Deployment, signer: JoserfcSigner) -> ProtectedResource:
    return ProtectedResource(deployment, signer)


@pytest.fixture(params=["joserfc", "pyjwt"])
def library_signer(request: pytest.FixtureRequest) -> JoserfcSigner | PyJWTSigner:
    if request.param == "joserfc":
        return JoserfcSigner(ECKey.generate_key("P-256"))
    return PyJWTSigner(ec.generate_private_key(ec.SECP256R1()))


class TestIndependentProofsAreAccepted:
    def test_proof_binds_the_token_and_authorizes_an_api_call(
        self, deployment: Deployment, library_signer: JoserfcSigner | PyJWTSigner
    ) -> None:
        client = new_client(deployment)
        binding = library_signer.sign(proof_claims("POST", deployment.token_endpoint, None))
        token = bound_token(deployment, client, binding)["access_token"]
        claims = pyjwt.decode(token, options={"verify_signature": False})
        assert claims["cnf"] == {"jkt": library_signer.thumbprint}  # RFC 9449 §6.1

        me_url = f"{deployment.issuer}/v1/me"
        me = call_me(deployment, token, library_signer.sign(proof_claims("GET", me_url, token)))
        assert me.status_code == 200, me.text
        assert me.json()["id"] == client.agent_id


class TestMutatedProofsAreRefused:
    def test_baseline_proof_is_accepted(self, target: Target) -> None:
        """The unmutated proof each refusal below starts from."""
        target.assert_accepted(target.send(target.proof()))

    def test_wrong_htu(self, target: Target) -> None:
        elsewhere = f"{target.deployment.issuer}/v1/orgs"
        target.assert_refused(target.send(target.proof(htu=elsewhere)), "htu")

    def test_wrong_htm(self, target: Target) -> None:
        other_method = "GET" if target.htm == "POST" else "POST"
        target.assert_refused(target.send(target.proof(htm=other_method)), "htm")

    def test_wrong_ath(self, api: ProtectedResource) -> None:
        api.assert_refused(api.send(api.proof(ath=ath_of("another-access-token"))), "ath")

    def test_replayed_jti(self, target: Target) -> None:
        proof = target.proof()
        target.assert_accepted(target.send(proof))
        target.assert_refused(target.send(proof), "replayed")

    def test_stale_iat(self, target: Target) -> None:
        stale = int(time.time()) - 2 * MAX_PROOF_AGE_SECONDS
        target.assert_refused(target.send(target.proof(iat=stale)), "too old")

    def test_private_key_in_header_jwk(self, target: Target, signer: JoserfcSigner) -> None:
        claims = proof_claims(target.htm, target.htu, target.access_token)
        leaky = signer.sign(claims, jwk=signer.key.as_dict(private=True))
        target.assert_refused(target.send(leaky), "private key")

    def test_alg_none(self, target: Target, signer: JoserfcSigner) -> None:
        claims = proof_claims(target.htm, target.htu, target.access_token)
        headers = {"typ": "dpop+jwt", "jwk": signer.key.as_dict(private=False)}
        unsigned = pyjwt.encode(claims, None, algorithm="none", headers=headers)
        assert unsigned.endswith(".")  # PyJWT's unsecured JWS: an empty signature
        target.assert_refused(target.send(unsigned), "alg")
