"""The token service: OAuth 2.0 / OpenID Connect grants, access tokens, DPoP, mTLS binding,
introspection, revocation and delegation for agents."""
