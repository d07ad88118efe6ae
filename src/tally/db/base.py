"""Declarative base shared by every table, with a naming convention Alembic can rely on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, MetaData, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT keys on PostgreSQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY autoincrements.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an aware UTC datetime is required")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Base class of every ORM model."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime()}


def parent_key(target: str, *, ondelete: str = "CASCADE", **kwargs: Any) -> Any:
    """A BigId foreign key column to `target` ("table.id"), gone with its parent by default."""
    return mapped_column(BigId, ForeignKey(target, ondelete=ondelete), **kwargs)


class IdKey:
    """Mixin: the surrogate primary key `id` of most tables."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)


class CreatedAt:
    """Mixin: when the row was written."""

    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Timestamps(CreatedAt):
    """Mixin: when the row was written and last changed (services set `updated_at`)."""

    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


def _merchant_key() -> Mapped[int]:
    column: Mapped[int] = parent_key("merchants.id", index=True, nullable=False)
    return column


class MerchantOwned:
    """Mixin: the row belongs to a merchant and goes with it (`merchant_id`)."""

    @declared_attr
    def merchant_id(cls) -> Mapped[int]:  # noqa: N805 - declared_attr receives the class
        return _merchant_key()


class TenantScoped(MerchantOwned):
    """Mixin for merchant-owned rows; a session bound to a merchant filters on it automatically."""

    # Declared again here: `with_loader_criteria(TenantScoped, ...)` reads the declared
    # attribute from this class's own namespace, not from a base class.
    @declared_attr
    def merchant_id(cls) -> Mapped[int]:  # noqa: N805 - declared_attr receives the class
        return _merchant_key()
