"""Marketing consent in the Dotdigital sync: which customers may become contacts.

Dotdigital creates a contact that arrives without ``channelProperties.email.status`` as
*subscribed*, and an upsert or import that names no status leaves an existing contact's status
as it is (see docs/dotdigital-consent.md). So Tally never sends a status:

- a customer whose consent is recorded (``accepts_marketing`` true) is sent as before: a new
  contact is created subscribed, an existing one keeps its status;
- any other customer is sent only where a contact already exists. The automatic sync looks the
  contact up first (one more call from the budget) and sends nothing when there is none; a bulk
  import cannot be told not to create, so it never carries such a customer, and the manual
  sync leaves them out.

Customers left out are recorded per customer (a ``dotdigital_failures`` row with one of the
codes below, replaced when the customer is sent later) so the page can count them by reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from tally.integrations.dotdigital.orm import SyncFailure
from tally.integrations.dotdigital.statements import execute

NO_CONSENT_NO_CONTACT = "noConsentNoContact"
NO_CONSENT_NOT_LOOKED_UP = "noConsentNotLookedUp"
LEFT_OUT_REASONS = {
    NO_CONSENT_NO_CONTACT: "no marketing consent and no existing Dotdigital contact",
    NO_CONSENT_NOT_LOOKED_UP: (
        "no marketing consent; a full sync does not look contacts up one by one (the automatic "
        "sync updates their existing contacts when they change)"
    ),
}
LEFT_OUT_CODES = tuple(LEFT_OUT_REASONS)


def may_create(accepts_marketing: bool | None) -> bool:
    """Whether Tally may create a (subscribed) contact for this customer."""
    return accepts_marketing is True


def left_out_counts(session: Session, merchant_id: int) -> list[tuple[str, int]]:
    """(reason, customers) for every reason customers are not sent, most customers first."""
    rows = session.execute(
        select(SyncFailure.code, func.count(SyncFailure.id))
        .where(SyncFailure.merchant_id == merchant_id, SyncFailure.code.in_(LEFT_OUT_CODES))
        .group_by(SyncFailure.code)
    )
    counts = [(LEFT_OUT_REASONS[code], int(count)) for code, count in rows]
    return sorted(counts, key=lambda item: -item[1])


def clear_left_out(session: Session, merchant_id: int, customer_ids: Sequence[int]) -> None:
    """Forget that these customers were left out: they have been sent."""
    for start in range(0, len(customer_ids), 500):
        execute(
            session,
            delete(SyncFailure).where(
                SyncFailure.merchant_id == merchant_id,
                SyncFailure.code.in_(LEFT_OUT_CODES),
                SyncFailure.customer_id.in_(customer_ids[start : start + 500]),
            ),
        )


def record_left_out(
    session: Session,
    *,
    merchant_id: int,
    customers: Sequence[tuple[int, str]],
    code: str,
    job_id: int | None,
    now: datetime,
) -> None:
    """Record (customer id, email) pairs as left out for ``code``, replacing any older reason."""
    if not customers:
        return
    clear_left_out(session, merchant_id, [customer_id for customer_id, _email in customers])
    reason = LEFT_OUT_REASONS[code]
    session.execute(
        insert(SyncFailure),
        [
            {
                "merchant_id": merchant_id,
                "customer_id": customer_id,
                "email": email,
                "code": code,
                "reason": reason,
                "sync_job_id": job_id,
                "failed_at": now,
            }
            for customer_id, email in customers
        ],
    )
