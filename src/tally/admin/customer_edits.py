"""Changing a customer from their profile: name, email and birthday; redeeming on their behalf.

Both need ``Permission.CUSTOMER_EDITS`` (managers and owners; support only views and adjusts).
They go through the same services as the API (``customers.update_customer``, which announces
``CustomerUpdated`` for Dotdigital and webhooks; ``redemptions.redeem_reward``: ledger, coupon
code, email), and a redemption's form token is its idempotency key, so a double submit spends
once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tally.admin.customers import form_refused
from tally.admin.permissions import Permission, requires
from tally.admin.web import Admin, AdminDep, AdminRoute, FormDep, problems_by_field, redirect, text
from tally.api.edge import Id
from tally.customers import service as customers
from tally.errors import DomainError, FieldProblem, ValidationFailed
from tally.program import redemptions

router = APIRouter(route_class=AdminRoute, dependencies=[requires(Permission.CUSTOMER_EDITS)])

NAME_LENGTH = 100  # the customers table's column
DATE_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}")


def _apply(admin: Admin, service: Callable[..., object], **arguments: Any) -> None:
    """Run a customer service for the admin's merchant in one unit of work."""
    with admin.unit_of_work() as session:
        service(session, merchant_id=admin.merchant_id, **arguments)


def parse_birthday(raw: str) -> date | None:
    """A birthday typed as YYYY-MM-DD (blank: none); the service checks 1900 to today."""
    if not raw:
        return None
    try:
        if not DATE_FORMAT.fullmatch(raw):
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed(
            "the birthday is not a date",
            [FieldProblem("birthday", "enter a date as YYYY-MM-DD, e.g. 1990-04-21", raw)],
        ) from None


def _name(raw: str, field: str) -> str | None:
    if len(raw) > NAME_LENGTH:
        raise ValidationFailed(
            f"the {field.replace('_', ' ')} is too long",
            [FieldProblem(field, f"at most {NAME_LENGTH} characters", raw)],
        )
    return raw or None


@router.post("/customers/{customer_id}/profile", include_in_schema=False)
def edit_profile(request: Request, admin: AdminDep, form: FormDep, customer_id: Id) -> Response:
    """Save a customer's name, email and birthday (all or nothing)."""
    values = {name: text(form, name) for name in ("first_name", "last_name", "email", "birthday")}
    try:
        first_name = _name(values["first_name"], "first_name")
        last_name = _name(values["last_name"], "last_name")
        birthday = parse_birthday(values["birthday"])
        _apply(
            admin,
            customers.update_customer,
            customer_id=customer_id,
            first_name=first_name,
            last_name=last_name,
            email=values["email"],
            birthday=birthday,
        )
    except DomainError as error:
        shown = {
            "profile_errors": problems_by_field(error.errors) or {"email": error.detail},
            "profile_error": error.detail,
            "profile_values": values,
        }
        return form_refused(request, admin, customer_id, error, shown)
    return redirect(f"/admin/customers/{customer_id}?done=profile-saved")


def _points(raw: str) -> int | None:
    if not raw:
        return None
    try:
        return int(raw.replace(",", ""))
    except ValueError:
        raise ValidationFailed(
            "the points are not a whole number",
            [FieldProblem("points", "enter a whole number of points", raw)],
        ) from None


@router.post("/customers/{customer_id}/redemptions", include_in_schema=False)
def redeem(request: Request, admin: AdminDep, form: FormDep, customer_id: Id) -> Response:
    """Spend the customer's points on a reward for them, as the API does (once per form)."""
    reward_id, raw_points = text(form, "reward_id"), text(form, "points")
    key = text(form, "redeem_key") or None
    try:
        if key is None:
            # Without the form's token a double submit could spend twice: refuse instead.
            raise ValidationFailed(
                "the form is incomplete; reload the page and try again",
                [FieldProblem("reward_id", "reload the page and try again")],
            )
        points = _points(raw_points)
        _apply(
            admin,
            redemptions.redeem_reward,
            customer_id=customer_id,
            reward_id=reward_id,
            points=points,
            idempotency_key=f"admin:{key}"[:150],
        )
    except DomainError as error:
        shown = {
            "redeem_key": key or "",
            "redeem_error": error.detail,
            "redeem_values": {"reward_id": reward_id, "points": raw_points},
        }
        return form_refused(request, admin, customer_id, error, shown)
    return redirect(f"/admin/customers/{customer_id}?tab=spending&done=redeemed")
