"""Rate limits (per client on the token endpoint, per principal on the API) and tier quotas."""
