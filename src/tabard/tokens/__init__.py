"""The token service: signing keys and JWKS (this issue), OAuth 2.0 grants and tokens (next)."""
