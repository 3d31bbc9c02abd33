"""Client credentials of agents: secrets (hashed) and registered JWKS, rotation and expiry."""
