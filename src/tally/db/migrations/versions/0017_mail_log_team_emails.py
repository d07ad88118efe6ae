"""mail log: team emails and SMTP test emails have no customer (revision 0017, after 0013)"""

import sqlalchemy as sa
from alembic import op

# Team emails (invitations, password resets) and SMTP tests are in the mail log, with no customer.
revision = "0017"
down_revision = "0015"

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("email_messages") as batch:
        batch.alter_column("customer_id", existing_type=_ID, nullable=True)


def downgrade() -> None:
    # Rows without a customer cannot be kept in the older schema.
    op.execute("DELETE FROM email_messages WHERE customer_id IS NULL")
    with op.batch_alter_table("email_messages") as batch:
        batch.alter_column("customer_id", existing_type=_ID, nullable=False)
