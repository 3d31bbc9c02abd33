"""Events: the outbox relay, the event catalogue, webhooks (subscriptions, signed deliveries,
retries, dead letters) and event streams."""
