"""Idempotency keys for retried writes: the stored request and the response it got."""
