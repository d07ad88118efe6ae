"""Imports every ORM module so `Base.metadata` knows all tables (for Alembic and tests)."""

from tally.api import idempotency as api_idempotency
from tally.customers import orm as customers_orm
from tally.db.base import Base
from tally.ledger import orm as ledger_orm
from tally.merchants import orm as merchants_orm
from tally.outbox import orm as outbox_orm

__all__ = [
    "Base",
    "api_idempotency",
    "customers_orm",
    "ledger_orm",
    "merchants_orm",
    "outbox_orm",
]
