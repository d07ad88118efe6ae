"""notification emails: templates, mail log, merchant SMTP settings

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 19:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tally.db.base

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _merchant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["merchant_id"],
        ["merchants.id"],
        name=op.f(f"fk_{table}_merchant_id_merchants"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "email_templates",
        sa.Column("id", _ID, nullable=False),
        sa.Column("email_type", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("html_body", sa.Text(), nullable=True),
        sa.Column("text_body", sa.Text(), nullable=True),
        sa.Column("updated_at", tally.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("merchant_id", _ID, nullable=False),
        sa.CheckConstraint(
            "(subject IS NULL AND html_body IS NULL AND text_body IS NULL)"
            " OR (subject IS NOT NULL AND html_body IS NOT NULL AND text_body IS NOT NULL)",
            name=op.f("ck_email_templates_all_parts_or_none"),
        ),
        _merchant_fk("email_templates"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_templates")),
        sa.UniqueConstraint(
            "merchant_id", "email_type", name=op.f("uq_email_templates_merchant_id_email_type")
        ),
    )
    with op.batch_alter_table("email_templates", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_email_templates_merchant_id"), ["merchant_id"], unique=False
        )

    op.create_table(
        "email_messages",
        sa.Column("id", _ID, nullable=False),
        sa.Column("customer_id", _ID, nullable=False),
        sa.Column("email_type", sa.String(length=64), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", tally.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", tally.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("merchant_id", _ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_email_messages_customer_id_customers"),
            ondelete="CASCADE",
        ),
        _merchant_fk("email_messages"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_messages")),
        sa.UniqueConstraint(
            "merchant_id", "dedupe_key", name=op.f("uq_email_messages_merchant_id_dedupe_key")
        ),
    )
    with op.batch_alter_table("email_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_email_messages_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_email_messages_merchant_id"), ["merchant_id"], unique=False
        )
        batch_op.create_index(
            "ix_email_messages_merchant_status", ["merchant_id", "status", "id"], unique=False
        )

    op.create_table(
        "mail_settings",
        sa.Column("id", _ID, nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("security", sa.String(length=16), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=True),
        sa.Column("password_encrypted", sa.Text(), nullable=True),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("updated_at", tally.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("merchant_id", _ID, nullable=False),
        _merchant_fk("mail_settings"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_settings")),
        sa.UniqueConstraint("merchant_id", name=op.f("uq_mail_settings_merchant_id")),
    )
    with op.batch_alter_table("mail_settings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mail_settings_merchant_id"), ["merchant_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("mail_settings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mail_settings_merchant_id"))
    op.drop_table("mail_settings")

    with op.batch_alter_table("email_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_email_messages_merchant_status")
        batch_op.drop_index(batch_op.f("ix_email_messages_merchant_id"))
        batch_op.drop_index(batch_op.f("ix_email_messages_customer_id"))
    op.drop_table("email_messages")

    with op.batch_alter_table("email_templates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_email_templates_merchant_id"))
    op.drop_table("email_templates")
