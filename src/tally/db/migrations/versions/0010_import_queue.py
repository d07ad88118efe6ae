"""import queue: stored uploads, the lease and progress of import jobs run by the workers

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tally.db.base

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = tally.db.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("import_jobs") as batch:
        batch.add_column(sa.Column("locked_by", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("locked_until", _TIME, nullable=True))
        # The server defaults fill existing rows, so the columns can be NOT NULL at once.
        batch.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("progress_phase", sa.String(length=16), nullable=True))
        batch.add_column(
            sa.Column("progress_done", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("progress_total", sa.Integer(), server_default="0", nullable=False)
        )
        batch.create_index("ix_import_jobs_status", ["status"], unique=False)

    op.create_table(
        "import_upload_chunks",
        sa.Column("id", _ID, nullable=False),
        sa.Column("job_id", _ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("merchant_id", _ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["import_jobs.id"],
            name=op.f("fk_import_upload_chunks_job_id_import_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_import_upload_chunks_merchant_id_merchants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_upload_chunks")),
        sa.UniqueConstraint(
            "job_id", "position", name=op.f("uq_import_upload_chunks_job_id_position")
        ),
    )
    with op.batch_alter_table("import_upload_chunks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_import_upload_chunks_merchant_id"), ["merchant_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("import_upload_chunks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_import_upload_chunks_merchant_id"))
    op.drop_table("import_upload_chunks")
    with op.batch_alter_table("import_jobs") as batch:
        batch.drop_index("ix_import_jobs_status")
        for column in (
            "progress_total",
            "progress_done",
            "progress_phase",
            "attempts",
            "locked_until",
            "locked_by",
        ):
            batch.drop_column(column)
