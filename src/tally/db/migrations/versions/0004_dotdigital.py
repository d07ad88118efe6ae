"""dotdigital: connections, pending contacts, manual sync jobs, imports, failures

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tally.db.base

revision: str = "0004"
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
        "dotdigital_connections",
        sa.Column("id", _ID, nullable=False),
        sa.Column("api_username", sa.String(length=255), nullable=False),
        sa.Column("password_encrypted", sa.Text(), nullable=False),
        sa.Column("api_endpoint", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("field_mapping", sa.JSON(), nullable=False),
        sa.Column("field_check", sa.JSON(), nullable=True),
        sa.Column("calls_per_minute", sa.Integer(), nullable=True),
        sa.Column("budget_tokens", sa.Float(), nullable=True),
        sa.Column("budget_updated_at", _TIME, nullable=True),
        sa.Column("paused_until", _TIME, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", _TIME, nullable=True),
        sa.Column("last_successful_sync_at", _TIME, nullable=True),
        sa.Column("flush_locked_by", sa.String(length=100), nullable=True),
        sa.Column("flush_locked_until", _TIME, nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("merchant_id", _ID, nullable=False),
        _merchant_fk("dotdigital_connections"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dotdigital_connections")),
        sa.UniqueConstraint("merchant_id", name=op.f("uq_dotdigital_connections_merchant_id")),
    )
    with op.batch_alter_table("dotdigital_connections", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dotdigital_connections_merchant_id"), ["merchant_id"], unique=False
        )

    op.create_table(
        "dotdigital_sync_jobs",
        sa.Column("id", _ID, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total_count", sa.Integer(), nullable=False),
        sa.Column("sent_count", sa.Integer(), nullable=False),
        sa.Column("created_count", sa.Integer(), nullable=False),
        sa.Column("updated_count", sa.Integer(), nullable=False),
        sa.Column("failed_count", sa.Integer(), nullable=False),
        sa.Column("cursor_customer_id", sa.BigInteger(), nullable=False),
        sa.Column("all_sent", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("locked_by", sa.String(length=100), nullable=True),
        sa.Column("locked_until", _TIME, nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("started_at", _TIME, nullable=True),
        sa.Column("finished_at", _TIME, nullable=True),
        sa.Column("merchant_id", _ID, nullable=False),
        _merchant_fk("dotdigital_sync_jobs"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dotdigital_sync_jobs")),
    )
    with op.batch_alter_table("dotdigital_sync_jobs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dotdigital_sync_jobs_merchant_id"), ["merchant_id"], unique=False
        )
        batch_op.create_index(
            "ix_dotdigital_sync_jobs_merchant_status", ["merchant_id", "status"], unique=False
        )

    op.create_table(
        "dotdigital_imports",
        sa.Column("id", _ID, nullable=False),
        sa.Column("job_id", _ID, nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("import_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("contact_count", sa.Integer(), nullable=False),
        sa.Column("first_customer_id", sa.BigInteger(), nullable=True),
        sa.Column("last_customer_id", sa.BigInteger(), nullable=True),
        sa.Column("created_count", sa.Integer(), nullable=False),
        sa.Column("updated_count", sa.Integer(), nullable=False),
        sa.Column("failed_count", sa.Integer(), nullable=False),
        sa.Column("started_at", _TIME, nullable=False),
        sa.Column("checked_at", _TIME, nullable=True),
        sa.Column("finished_at", _TIME, nullable=True),
        sa.Column("merchant_id", _ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["dotdigital_sync_jobs.id"],
            name=op.f("fk_dotdigital_imports_job_id_dotdigital_sync_jobs"),
            ondelete="CASCADE",
        ),
        _merchant_fk("dotdigital_imports"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dotdigital_imports")),
        sa.UniqueConstraint(
            "merchant_id", "import_id", name=op.f("uq_dotdigital_imports_merchant_id_import_id")
        ),
    )
    with op.batch_alter_table("dotdigital_imports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dotdigital_imports_job_id"), ["job_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_dotdigital_imports_merchant_id"), ["merchant_id"], unique=False
        )
        batch_op.create_index(
            "ix_dotdigital_imports_merchant_status", ["merchant_id", "status"], unique=False
        )

    op.create_table(
        "dotdigital_pending_contacts",
        sa.Column("id", _ID, nullable=False),
        sa.Column("customer_id", _ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("first_marked_at", _TIME, nullable=False),
        sa.Column("last_marked_at", _TIME, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TIME, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("import_pk", _ID, nullable=True),
        sa.Column("sending_version", sa.Integer(), nullable=True),
        sa.Column("merchant_id", _ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_dotdigital_pending_contacts_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["import_pk"],
            ["dotdigital_imports.id"],
            name=op.f("fk_dotdigital_pending_contacts_import_pk_dotdigital_imports"),
            ondelete="SET NULL",
        ),
        _merchant_fk("dotdigital_pending_contacts"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dotdigital_pending_contacts")),
        sa.UniqueConstraint(
            "merchant_id",
            "customer_id",
            name=op.f("uq_dotdigital_pending_contacts_merchant_id_customer_id"),
        ),
    )
    with op.batch_alter_table("dotdigital_pending_contacts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dotdigital_pending_contacts_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_dotdigital_pending_contacts_import_pk"), ["import_pk"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_dotdigital_pending_contacts_merchant_id"), ["merchant_id"], unique=False
        )
        batch_op.create_index(
            "ix_dotdigital_pending_contacts_due", ["merchant_id", "next_attempt_at"], unique=False
        )

    op.create_table(
        "dotdigital_failures",
        sa.Column("id", _ID, nullable=False),
        sa.Column("customer_id", _ID, nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("sync_job_id", _ID, nullable=True),
        sa.Column("failed_at", _TIME, nullable=False),
        sa.Column("merchant_id", _ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_dotdigital_failures_customer_id_customers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["sync_job_id"],
            ["dotdigital_sync_jobs.id"],
            name=op.f("fk_dotdigital_failures_sync_job_id_dotdigital_sync_jobs"),
            ondelete="SET NULL",
        ),
        _merchant_fk("dotdigital_failures"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dotdigital_failures")),
    )
    with op.batch_alter_table("dotdigital_failures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dotdigital_failures_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_dotdigital_failures_merchant_id"), ["merchant_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_dotdigital_failures_sync_job_id"), ["sync_job_id"], unique=False
        )
        batch_op.create_index(
            "ix_dotdigital_failures_merchant_failed", ["merchant_id", "failed_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("dotdigital_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_dotdigital_failures_merchant_failed")
        batch_op.drop_index(batch_op.f("ix_dotdigital_failures_sync_job_id"))
        batch_op.drop_index(batch_op.f("ix_dotdigital_failures_merchant_id"))
        batch_op.drop_index(batch_op.f("ix_dotdigital_failures_customer_id"))
    op.drop_table("dotdigital_failures")

    with op.batch_alter_table("dotdigital_pending_contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_dotdigital_pending_contacts_due")
        batch_op.drop_index(batch_op.f("ix_dotdigital_pending_contacts_merchant_id"))
        batch_op.drop_index(batch_op.f("ix_dotdigital_pending_contacts_import_pk"))
        batch_op.drop_index(batch_op.f("ix_dotdigital_pending_contacts_customer_id"))
    op.drop_table("dotdigital_pending_contacts")

    with op.batch_alter_table("dotdigital_imports", schema=None) as batch_op:
        batch_op.drop_index("ix_dotdigital_imports_merchant_status")
        batch_op.drop_index(batch_op.f("ix_dotdigital_imports_merchant_id"))
        batch_op.drop_index(batch_op.f("ix_dotdigital_imports_job_id"))
    op.drop_table("dotdigital_imports")

    with op.batch_alter_table("dotdigital_sync_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_dotdigital_sync_jobs_merchant_status")
        batch_op.drop_index(batch_op.f("ix_dotdigital_sync_jobs_merchant_id"))
    op.drop_table("dotdigital_sync_jobs")

    with op.batch_alter_table("dotdigital_connections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dotdigital_connections_merchant_id"))
    op.drop_table("dotdigital_connections")
