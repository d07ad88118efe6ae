"""program versions: every saved version of a merchant's program settings

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 14:25:46.102642
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import tally.db.base

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    versions = op.create_table(
        "program_versions",
        sa.Column("id", _ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("changed_by", sa.String(length=200), nullable=False),
        sa.Column("changed_at", tally.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("merchant_id", _ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_program_versions_merchant_id_merchants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_program_versions")),
        sa.UniqueConstraint(
            "merchant_id", "version", name=op.f("uq_program_versions_merchant_id_version")
        ),
    )
    with op.batch_alter_table("program_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_program_versions_merchant_id"), ["merchant_id"], unique=False
        )
    # Settings saved before history was kept become each merchant's first known version.
    merchants = sa.table("merchants", sa.column("id", _ID), sa.column("program_settings", sa.JSON))
    now = datetime.now(UTC)
    rows = []
    for merchant_id, stored in op.get_bind().execute(
        sa.select(merchants.c.id, merchants.c.program_settings)
    ):
        settings = json.loads(stored) if isinstance(stored, str) else stored
        if settings and isinstance(settings.get("version"), int):
            rows.append(
                {
                    "merchant_id": merchant_id,
                    "version": settings["version"],
                    "settings": settings,
                    "changed_by": "before history was kept",
                    "changed_at": now,
                }
            )
    if rows:
        op.bulk_insert(versions, rows)


def downgrade() -> None:
    with op.batch_alter_table("program_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_program_versions_merchant_id"))
    op.drop_table("program_versions")
