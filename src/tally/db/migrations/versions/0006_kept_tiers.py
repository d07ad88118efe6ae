"""kept VIP tiers on customers; joins the Dotdigital (0004) and imports (0005) branches

Revision ID: 0006
Revises: 0004, 0005
Create Date: 2026-11-23 22:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tally.db.base

revision: str = "0006"
down_revision: str | Sequence[str] | None = ("0004", "0005")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("vip_tier_kept", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column(
                "vip_tier_kept_until", tally.db.base.UTCDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("vip_tier_kept_until")
        batch.drop_column("vip_tier_kept")
