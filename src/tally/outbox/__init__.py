"""Transactional outbox: events become rows in the same transaction; a worker delivers them."""
