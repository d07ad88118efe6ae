"""customers' recorded email marketing consent: given or not (null: unknown), where, when

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 00:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tally.db.base

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("accepts_marketing", sa.Boolean(), nullable=True),
        sa.Column("marketing_consent_source", sa.String(length=100), nullable=True),
        sa.Column("marketing_consent_at", tally.db.base.UTCDateTime(timezone=True), nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        for column in _columns():
            batch.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        for column in reversed(_columns()):
            batch.drop_column(column.name)
