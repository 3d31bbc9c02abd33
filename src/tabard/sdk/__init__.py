"""The Python client for Tabard. Importing it loads none of the server's dependencies."""

from tabard.sdk.client import Client, TabardAPIError

__all__ = ["Client", "TabardAPIError"]
