"""dotdigital: drift checks (reconciles) and the contacts they compared or found differing

Revision ID: 0019
Revises: 0013
Create Date: 2026-12-03 00:40:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from tally.db.base import UTCDateTime

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
RECONCILES = "dotdigital_reconciles"
CONTACTS = "dotdigital_reconcile_contacts"


def _reference(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    """A cascading foreign key named as the metadata's naming convention names it."""
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=op.f(f"fk_{table}_{column}_{target}"),
        ondelete="CASCADE",
    )


def _columns(spec: dict[str, tuple[Any, bool]]) -> list[sa.Column[Any]]:
    return [sa.Column(name, kind, nullable=nullable) for name, (kind, nullable) in spec.items()]


revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    counts = ("pages_read", "contacts_read", "checked_count", "differ_count", "missing_count")
    op.create_table(
        RECONCILES,
        *_columns(
            {
                "id": (_ID, False),
                "status": (sa.String(length=16), False),
                "marker": (sa.Text(), True),
                **{name: (sa.Integer(), False) for name in counts},
                "last_error": (sa.Text(), True),
                "locked_by": (sa.String(length=100), True),
                "locked_until": (UTCDateTime(timezone=True), True),
                "fix_queued_at": (UTCDateTime(timezone=True), True),
                "fix_queued_count": (sa.Integer(), False),
                "started_at": (UTCDateTime(timezone=True), False),
                "finished_at": (UTCDateTime(timezone=True), True),
                "merchant_id": (_ID, False),
            }
        ),
        _reference(RECONCILES, "merchant_id", "merchants"),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{RECONCILES}")),
    )
    with op.batch_alter_table(RECONCILES, schema=None) as batch_op:
        batch_op.create_index(batch_op.f(f"ix_{RECONCILES}_merchant_id"), ["merchant_id"])
        batch_op.create_index(f"ix_{RECONCILES}_merchant_status", ["merchant_id", "status"])

    op.create_table(
        CONTACTS,
        *_columns(
            {
                "id": (_ID, False),
                "state": (sa.String(length=16), False),
                "reconcile_id": (_ID, False),
                "email": (sa.String(length=320), False),
                "customer_id": (_ID, False),
                "fields": (sa.JSON(), False),
                "merchant_id": (_ID, False),
            }
        ),
        _reference(CONTACTS, "customer_id", "customers"),
        _reference(CONTACTS, "merchant_id", "merchants"),
        _reference(CONTACTS, "reconcile_id", RECONCILES),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{CONTACTS}")),
        sa.UniqueConstraint(
            "reconcile_id", "customer_id", name=op.f(f"uq_{CONTACTS}_reconcile_id_customer_id")
        ),
    )
    with op.batch_alter_table(CONTACTS, schema=None) as batch_op:
        for column in ("customer_id", "merchant_id"):
            batch_op.create_index(batch_op.f(f"ix_{CONTACTS}_{column}"), [column])
        batch_op.create_index(f"ix_{CONTACTS}_state", ["reconcile_id", "state"])


def downgrade() -> None:
    op.drop_table(CONTACTS)
    op.drop_table(RECONCILES)
