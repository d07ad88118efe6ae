"""storefront: one settings row per merchant (widget id, signing secret, origins, appearance)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03 08:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tally.db.base import UTCDateTime

revision: str = "0020"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "storefront_settings"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("widget_id", sa.String(length=32), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("previous_secret_encrypted", sa.Text(), nullable=True),
        sa.Column("previous_secret_expires_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("allowed_origins", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("appearance", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "merchant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f(f"fk_{TABLE}_merchant_id_merchants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{TABLE}")),
        sa.UniqueConstraint("merchant_id", name=op.f(f"uq_{TABLE}_merchant_id")),
        sa.UniqueConstraint("widget_id", name=op.f(f"uq_{TABLE}_widget_id")),
    )
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        batch_op.create_index(batch_op.f(f"ix_{TABLE}_merchant_id"), ["merchant_id"])


def downgrade() -> None:
    op.drop_table(TABLE)
