"""PKI: org CAs, agent certificates (X.509 SVIDs), certificate login, revocation, bundles."""
