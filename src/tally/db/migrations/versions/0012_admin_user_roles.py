"""admin users' roles: owner, manager or support (everyone before this is an owner)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
# The lead renumbers at merge: on main this follows "0010".
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("admin_users") as batch:
        # The server default makes every existing admin user an owner, as they were in effect.
        batch.add_column(
            sa.Column("role", sa.String(length=16), server_default="owner", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("admin_users") as batch:
        batch.drop_column("role")
