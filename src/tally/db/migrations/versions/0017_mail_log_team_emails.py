"""mail log: team emails and SMTP test emails have no customer

Revision ID: 0017
Revises: 0013
Create Date: 2026-12-03 00:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("email_messages") as batch:
        batch.alter_column("customer_id", existing_type=_ID, nullable=True)


def downgrade() -> None:
    # Rows without a customer cannot be kept in the older schema.
    op.execute("DELETE FROM email_messages WHERE customer_id IS NULL")
    with op.batch_alter_table("email_messages") as batch:
        batch.alter_column("customer_id", existing_type=_ID, nullable=False)
