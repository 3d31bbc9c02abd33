"""Tabard's signing keys: generation, sealing at rest, rotation and the published JWKS."""
