"""API shapes (separate from the ORM models)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, Self, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, StrictBool
from sqlalchemy.orm import Session

from tally.api.edge import Paging
from tally.ledger.bounds import MAX_POINTS

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_date_text(value: object) -> object:
    # Pydantic's lax dates also take numbers (0 becomes 1970-01-01) and timestamps; a birthday
    # sent as anything but YYYY-MM-DD is a client bug worth a 422, not a silent guess.
    if isinstance(value, date) or value is None:
        return value
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError("expected a date as YYYY-MM-DD")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date_text)]


def money_text(value: Decimal) -> str:
    """A decimal as text with at least two places and no trailing zeros beyond them."""
    normalized = value.normalize()
    exponent = normalized.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        normalized = normalized.quantize(Decimal("0.01"))
    return format(normalized, "f")


# Amounts are stored with four places: without one rendering, the same order read back would
# say 120.0000 where the POST that made it said 120.00.
MoneyText = Annotated[Decimal, PlainSerializer(money_text, return_type=str)]


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    items: list[T]
    total: int
    limit: int
    offset: int

    @classmethod
    def of(cls, found: tuple[Sequence[Any], int], out: Callable[[Any], T], paging: Paging) -> Self:
        """The page of a service's `(rows, total)`, each row shown by `out`."""
        rows, total = found
        return cls(
            items=[out(row) for row in rows],
            total=total,
            limit=paging.limit,
            offset=paging.offset,
        )

    @classmethod
    def listed(
        cls,
        lister: Callable[..., tuple[Sequence[Any], int]],
        out: Callable[[Any], T],
        paging: Paging,
        session: Session,
        **filters: Any,
    ) -> Self:
        """The page a service's list function finds with `filters`, at the paging's window."""
        found = lister(session, limit=paging.limit, offset=paging.offset, **filters)
        return cls.of(found, out, paging)


_CONSENT_HELP = (
    "the customer's answer to email marketing, recorded with source `api` and the time; "
    "omitted or null leaves the recorded answer as it is. Dotdigital contacts are created "
    "only for customers who said yes."
)


class CustomerCreate(BaseModel):
    """Enrol a customer (or turn a guest into a member)."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=320)
    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    birthday: IsoDate | None = None
    external_id: str | None = Field(default=None, max_length=100)
    referred_by: str | None = Field(default=None, max_length=16, description="a referral code")
    accepts_marketing: StrictBool | None = Field(default=None, description=_CONSENT_HELP)


class CustomerUpdate(BaseModel):
    """Fields that may change; omitted fields stay as they are, null clears."""

    model_config = ConfigDict(extra="forbid")

    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    birthday: IsoDate | None = None
    accepts_marketing: StrictBool | None = Field(default=None, description=_CONSENT_HELP)


class CustomerOut(BaseModel):
    """A customer as the API shows it."""

    id: int
    email: str
    first_name: str | None
    last_name: str | None
    birthday: date | None
    external_id: str | None
    state: str
    referral_code: str
    referral_url: str
    points_balance: int
    points_expire_at: datetime | None = Field(
        description="when the next points expire (None: they do not)"
    )
    points_expiring: int = Field(description="how many points expire then")
    vip_tier: str | None
    accepts_marketing: bool | None = Field(
        description="email marketing consent as recorded (null: never stated)"
    )
    marketing_consent_source: str | None = Field(
        description="where it was stated: api, admin, store or import:<job id>"
    )
    marketing_consent_at: datetime | None = Field(description="when it was stated")
    enrolled_at: datetime | None
    last_activity_at: datetime | None
    created_at: datetime


class AdjustmentCreate(BaseModel):
    """A manual points adjustment."""

    model_config = ConfigDict(extra="forbid")

    points: int = Field(
        ge=-MAX_POINTS,
        le=MAX_POINTS,
        description=f"positive to add, negative to remove; not zero; at most {MAX_POINTS:,}",
    )
    reason: str = Field(min_length=1, max_length=500)


class LedgerEntryOut(BaseModel):
    """One ledger entry."""

    id: int
    customer_id: int
    points: int
    kind: str
    reason: str
    source_ref: str | None
    rule_id: str | None
    rule_version: int | None
    remaining: int | None
    expires_at: datetime | None
    created_at: datetime


class AdjustmentOut(BaseModel):
    """The entry written by an adjustment and the balance after it."""

    entry: LedgerEntryOut
    balance: int


def view_of(model: type[M], source: object, **computed: Any) -> M:
    """`model` filled from the same-named attributes of `source`; `computed` gives the rest."""
    copied = {name: getattr(source, name) for name in model.model_fields if name not in computed}
    return model(**copied, **computed)


def model_dump_json_ready(model: BaseModel) -> Any:
    """A model as JSON-compatible data (dates as strings), for storing replayable responses."""
    return model.model_dump(mode="json")
