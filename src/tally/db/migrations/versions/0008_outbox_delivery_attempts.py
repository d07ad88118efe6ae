"""outbox delivery attempts: one row per run of a message's handler

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tally.db.base

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "outbox_delivery_attempts",
        sa.Column("id", _ID, nullable=False),
        sa.Column("message_id", _ID, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", tally.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["outbox_messages.id"],
            name=op.f("fk_outbox_delivery_attempts_message_id_outbox_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_delivery_attempts")),
        sa.UniqueConstraint(
            "message_id", "attempt", name=op.f("uq_outbox_delivery_attempts_message_id_attempt")
        ),
    )
    with op.batch_alter_table("outbox_delivery_attempts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_delivery_attempts_outcome_started", ["outcome", "started_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox_delivery_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_delivery_attempts_outcome_started")
    op.drop_table("outbox_delivery_attempts")
