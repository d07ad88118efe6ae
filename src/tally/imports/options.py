"""What a merchant chooses for an import: the options of a customer file and of an order file."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tally.imports.orm import ImportKind


class PointsMode(StrEnum):
    """What a customer file's points do to an existing customer.

    ``replace``: the file's value becomes the customer's migrated balance: the import entry is
    the difference between it and what earlier imports already credited (net of reverts), so
    points earned in Tally meanwhile are kept and a corrected file only moves the difference.
    ``add``: the file's value is credited on top of whatever the customer has.
    """

    REPLACE = "replace"
    ADD = "add"


@dataclass(frozen=True)
class CustomerImportOptions:
    """How to import a customer file."""

    points: PointsMode = PointsMode.REPLACE
    award_create_account: bool = False
    skip_invalid: bool = False

    def as_json(self) -> dict[str, Any]:
        """The options as stored on the job."""
        return {
            "points": self.points.value,
            "award_create_account": self.award_create_account,
            "skip_invalid": self.skip_invalid,
        }


@dataclass(frozen=True)
class OrderImportOptions:
    """How to import an order file."""

    vip_only: bool = False
    """Record the orders for VIP tiers only, without points."""
    send_create_account_emails: bool = False
    """Invite the guests who received points to create an account and claim them."""
    skip_invalid: bool = False

    def as_json(self) -> dict[str, Any]:
        """The options as stored on the job."""
        return {
            "vip_only": self.vip_only,
            "send_create_account_emails": self.send_create_account_emails,
            "skip_invalid": self.skip_invalid,
        }


ImportOptions = CustomerImportOptions | OrderImportOptions


def kind_of(options: ImportOptions) -> ImportKind:
    if isinstance(options, CustomerImportOptions):
        return ImportKind.CUSTOMERS
    return ImportKind.ORDERS


def options_from_json(kind: ImportKind | str, data: dict[str, Any]) -> ImportOptions:
    """The options as ``as_json`` stored them on a job of this kind (a missing one: its
    default, as a job recorded before that option existed means)."""
    if ImportKind(kind) is ImportKind.CUSTOMERS:
        return CustomerImportOptions(
            points=PointsMode(data.get("points", PointsMode.REPLACE.value)),
            award_create_account=bool(data.get("award_create_account")),
            skip_invalid=bool(data.get("skip_invalid")),
        )
    return OrderImportOptions(
        vip_only=bool(data.get("vip_only")),
        send_create_account_emails=bool(data.get("send_create_account_emails")),
        skip_invalid=bool(data.get("skip_invalid")),
    )
