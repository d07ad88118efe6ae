"""import_kept_tiers (the VIP tiers a customers import kept, for its revert); preview collisions

Revision ID: 0018
Revises: 0013
Create Date: 2026-12-03 00:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tally.db.base

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("import_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("collisions", sa.JSON(), server_default="[]", nullable=False))
    op.create_table(
        "import_kept_tiers",
        sa.Column("id", _ID, nullable=False),
        sa.Column("job_id", _ID, nullable=False),
        sa.Column("customer_id", _ID, nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("old_tier", sa.String(length=64), nullable=True),
        sa.Column("old_kept", sa.String(length=64), nullable=True),
        sa.Column("old_kept_until", tally.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("merchant_id", _ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_import_kept_tiers_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["import_jobs.id"],
            name=op.f("fk_import_kept_tiers_job_id_import_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_import_kept_tiers_merchant_id_merchants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_kept_tiers")),
    )
    with op.batch_alter_table("import_kept_tiers", schema=None) as batch_op:
        batch_op.create_index("ix_import_kept_tiers_job", ["job_id", "id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_import_kept_tiers_merchant_id"), ["merchant_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("import_kept_tiers")
    with op.batch_alter_table("import_jobs", schema=None) as batch_op:
        batch_op.drop_column("collisions")
