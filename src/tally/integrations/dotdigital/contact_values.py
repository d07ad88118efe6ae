"""The customer facts a sync sends, and their Dotdigital data field values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

from sqlalchemy.orm import Session

from tally.config import Settings
from tally.customers.orm import Customer
from tally.integrations.dotdigital.client import DataFieldValue
from tally.integrations.dotdigital.fields import DataFieldMapping, contact_data_fields
from tally.program.config_service import load_program


class CustomerRow(NamedTuple):
    """The customer facts a sync sends."""

    id: int
    email: str
    points_balance: int
    birthday: date | None
    vip_tier: str | None
    referral_code: str | None
    # Recorded email marketing consent: only True lets the sync create a contact (consent.py).
    accepts_marketing: bool | None = None


# Selected in the order of CustomerRow's fields.
CUSTOMER_COLUMNS = (
    Customer.id,
    Customer.email,
    Customer.points_balance,
    Customer.birthday,
    Customer.vip_tier,
    Customer.referral_code,
    Customer.accepts_marketing,
)


@dataclass(frozen=True)
class ValueBuilder:
    """Turns a customer row into Dotdigital data field values."""

    mapping: DataFieldMapping
    tier_names: dict[str, str]
    base_url: str
    # The merchant's IANA time zone: birthdays are sent as noon there.
    time_zone: str = "UTC"

    def values(self, row: CustomerRow) -> dict[str, DataFieldValue]:
        """The mapped fields' values; DataFieldValueError when one cannot be sent."""
        tier = self.tier_names.get(row.vip_tier, row.vip_tier) if row.vip_tier else None
        referral = f"{self.base_url}/r/{row.referral_code}" if row.referral_code else None
        return contact_data_fields(
            self.mapping,
            points_balance=int(row.points_balance),
            referral_url=referral,
            birthday=row.birthday,
            vip_tier=tier,
            time_zone=self.time_zone,
        )


def value_builder(
    session: Session, settings: Settings, merchant_id: int, mapping: DataFieldMapping
) -> ValueBuilder:
    """Values as the merchant's program names them (VIP tier names, not ids), in its zone."""
    merchant, program = load_program(session, merchant_id)
    return ValueBuilder(
        mapping=mapping,
        tier_names={tier.id: tier.name for tier in program.vip.tiers},
        base_url=settings.public_base_url,
        time_zone=merchant.timezone,
    )
