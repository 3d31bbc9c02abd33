"""The Python client for Tabard. Importing it loads none of the server's dependencies."""

from tabard.sdk.agent import (
    ActionContext,
    ActionFailed,
    Agent,
    AgentError,
    CredentialsRejected,
    secret,
)
from tabard.sdk.client import Client, TabardAPIError
from tabard.sdk.jwt import KeySet, TokenInvalid, UnknownKeyId, verify_jwt
from tabard.sdk.token_file import TokenFileError
from tabard.sdk.verifier import KeySetUnavailable, TokenVerifier

__all__ = [
    "ActionContext",
    "ActionFailed",
    "Agent",
    "AgentError",
    "Client",
    "CredentialsRejected",
    "KeySet",
    "KeySetUnavailable",
    "TabardAPIError",
    "TokenFileError",
    "TokenInvalid",
    "TokenVerifier",
    "UnknownKeyId",
    "secret",
    "verify_jwt",
]
