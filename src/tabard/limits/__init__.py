"""Rate limits and tier quotas."""
