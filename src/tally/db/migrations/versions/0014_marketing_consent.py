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


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("accepts_marketing", sa.Boolean(), nullable=True))
        batch.add_column(
            sa.Column("marketing_consent_source", sa.String(length=100), nullable=True)
        )
        batch.add_column(
            sa.Column(
                "marketing_consent_at", tally.db.base.UTCDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("marketing_consent_at")
        batch.drop_column("marketing_consent_source")
        batch.drop_column("accepts_marketing")
