"""imports: import jobs, rejected rows, and the index on orders.import_id

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-24 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tally.db.base

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = tally.db.base.UTCDateTime(timezone=True)


def _merchant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["merchant_id"],
        ["merchants.id"],
        name=op.f(f"fk_{table}_merchant_id_merchants"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "import_jobs",
        sa.Column("id", _ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("file_format", sa.String(length=64), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("total_rows", sa.Integer(), nullable=False),
        sa.Column("new_count", sa.Integer(), nullable=False),
        sa.Column("updated_count", sa.Integer(), nullable=False),
        sa.Column("skipped_count", sa.Integer(), nullable=False),
        sa.Column("customers_created", sa.Integer(), nullable=False),
        sa.Column("invalid_count", sa.Integer(), nullable=False),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("points_issued", sa.BigInteger(), nullable=False),
        sa.Column("emails_queued", sa.Integer(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("started_at", _TIME, nullable=True),
        sa.Column("heartbeat_at", _TIME, nullable=True),
        sa.Column("finished_at", _TIME, nullable=True),
        sa.Column("reverted_at", _TIME, nullable=True),
        sa.Column("merchant_id", _ID, nullable=False),
        _merchant_fk("import_jobs"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_jobs")),
    )
    with op.batch_alter_table("import_jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_import_jobs_file", ["merchant_id", "kind", "checksum"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_import_jobs_merchant_id"), ["merchant_id"], unique=False
        )

    op.create_table(
        "import_rejected_rows",
        sa.Column("id", _ID, nullable=False),
        sa.Column("job_id", _ID, nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("merchant_id", _ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["import_jobs.id"],
            name=op.f("fk_import_rejected_rows_job_id_import_jobs"),
            ondelete="CASCADE",
        ),
        _merchant_fk("import_rejected_rows"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_rejected_rows")),
        sa.UniqueConstraint(
            "job_id", "row_number", name=op.f("uq_import_rejected_rows_job_id_row_number")
        ),
    )
    with op.batch_alter_table("import_rejected_rows", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_import_rejected_rows_merchant_id"), ["merchant_id"], unique=False
        )

    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_import_id", ["import_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_import_id")

    with op.batch_alter_table("import_rejected_rows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_import_rejected_rows_merchant_id"))
    op.drop_table("import_rejected_rows")

    with op.batch_alter_table("import_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_import_jobs_merchant_id"))
        batch_op.drop_index("ix_import_jobs_file")
    op.drop_table("import_jobs")
