"""The Python client for Tabard. Importing it loads none of the server's dependencies."""

from tabard.sdk.client import Client, TabardAPIError
from tabard.sdk.jwt import KeySet, TokenInvalid, UnknownKeyId, verify_jwt
from tabard.sdk.verifier import KeySetUnavailable, TokenVerifier

__all__ = [
    "Client",
    "KeySet",
    "KeySetUnavailable",
    "TabardAPIError",
    "TokenInvalid",
    "TokenVerifier",
    "UnknownKeyId",
    "verify_jwt",
]
