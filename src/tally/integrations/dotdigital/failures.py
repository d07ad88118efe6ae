"""Contacts Dotdigital refused, recorded for the merchant to see."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tally.customers.orm import Customer
from tally.integrations.dotdigital.client import DotdigitalRejected, ImportFailure
from tally.integrations.dotdigital.orm import SyncFailure
from tally.integrations.dotdigital.statements import execute


def rejection_reason(error: DotdigitalRejected) -> str:
    """Dotdigital's description of a refusal, with its per-item details."""
    details = "; ".join(
        str(d.get("description")) for d in error.details if d.get("description") is not None
    )
    message = error.message or str(error)
    return f"{message.rstrip('.')}: {details}" if details else message


def record_failure(
    session: Session,
    *,
    merchant_id: int,
    customer_id: int | None,
    email: str | None,
    code: str,
    reason: str,
    job_id: int | None,
    now: datetime,
) -> None:
    """One row per customer and code: a customer refused again replaces the older record."""
    if customer_id is not None:
        execute(
            session,
            delete(SyncFailure).where(
                SyncFailure.merchant_id == merchant_id,
                SyncFailure.customer_id == customer_id,
                SyncFailure.code == code,
            ),
        )
    session.add(
        SyncFailure(
            merchant_id=merchant_id,
            customer_id=customer_id,
            email=email,
            code=code[:100],
            reason=reason,
            sync_job_id=job_id,
            failed_at=now,
        )
    )


def record_import_failures(
    session: Session,
    *,
    merchant_id: int,
    failures: Sequence[ImportFailure],
    customer_ids: Mapping[str, int],
    job_id: int | None,
    now: datetime,
) -> int:
    """Record the contacts an import refused; ``customer_ids`` is keyed by lower-case email."""
    for failure in failures:
        codes = [code for code, _ in failure.reasons if code]
        reasons = [text for _, text in failure.reasons if text]
        record_failure(
            session,
            merchant_id=merchant_id,
            customer_id=customer_ids.get((failure.email or "").lower()),
            email=failure.email,
            code=codes[0] if codes else "importFailure",
            reason="; ".join(reasons) or "refused by Dotdigital",
            job_id=job_id,
            now=now,
        )
    return len(failures)


def customer_ids_by_email(
    session: Session, merchant_id: int, emails: Iterable[str]
) -> dict[str, int]:
    """The merchant's customer ids keyed by lower-case email."""
    wanted = sorted({email.lower() for email in emails})
    found: dict[str, int] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for customer_id, email in session.execute(
            select(Customer.id, Customer.email).where(
                Customer.merchant_id == merchant_id, Customer.email.in_(chunk)
            )
        ):
            found[email.lower()] = customer_id
    return found
