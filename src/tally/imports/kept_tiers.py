"""The VIP tiers a customers import keeps, recorded so that reverting the import undoes them.

A file's ``vip_tier`` is kept as a minimum for a year (``tiers.with_kept_tier``). The import
records, per customer, the tier it kept and what the customer had before (tier, kept tier and
until when); the revert puts those back, unless something later (another import) replaced the
kept tier meanwhile, and moves the tier as a tier review would, with the usual
``VipTierChanged`` (so Dotdigital, webhooks and the tier history follow; with VIP off, one
``CustomersImported`` names them).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from tally.customers.orm import Customer
from tally.db.bulk import chunks
from tally.imports.events import announce
from tally.imports.orm import ImportJob, ImportKeptTier
from tally.program import service as program_service


def record_kept_tiers(
    session: Session, *, merchant_id: int, job_id: int, tiers: Mapping[int, str], created: bool
) -> None:
    """Record the tiers (customer id -> tier id) an import is about to keep.

    For customers it just `created` there was nothing before; for existing ones the current
    values are read first, so call this before the update is written.
    """
    if not tiers:
        return
    before: dict[int, tuple[str | None, str | None, datetime | None]] = {}
    if not created:
        for part in chunks(list(tiers)):
            rows = session.execute(
                select(
                    Customer.id,
                    Customer.vip_tier,
                    Customer.vip_tier_kept,
                    Customer.vip_tier_kept_until,
                ).where(Customer.id.in_(part))
            )
            before.update({row[0]: (row[1], row[2], row[3]) for row in rows})
    session.execute(
        insert(ImportKeptTier),
        [
            {
                "merchant_id": merchant_id,
                "job_id": job_id,
                "customer_id": customer_id,
                "tier": tier,
                "old_tier": before.get(customer_id, (None, None, None))[0],
                "old_kept": before.get(customer_id, (None, None, None))[1],
                "old_kept_until": before.get(customer_id, (None, None, None))[2],
            }
            for customer_id, tier in tiers.items()
        ],
    )


def undo_kept_tiers(session: Session, job: ImportJob, now: datetime) -> set[int]:
    """Put back what the customers had before `job` kept their tiers; the customers changed."""
    marks: dict[int, ImportKeptTier] = {}
    for mark in session.scalars(
        select(ImportKeptTier)
        .where(ImportKeptTier.merchant_id == job.merchant_id, ImportKeptTier.job_id == job.id)
        .order_by(ImportKeptTier.id)
    ):
        # The first mark holds the state from before the job (a resumed job may add another).
        marks.setdefault(mark.customer_id, mark)
    program = program_service.load(session, job.merchant_id)
    changed: set[int] = set()
    quiet: set[int] = set()
    for part in chunks(list(marks)):
        for customer in session.scalars(select(Customer).where(Customer.id.in_(part))):
            mark = marks[customer.id]
            if customer.vip_tier_kept != mark.tier:
                continue  # a later import kept another tier: that one stands
            customer.vip_tier_kept = mark.old_kept
            customer.vip_tier_kept_until = mark.old_kept_until
            changed.add(customer.id)
            if program.settings.vip.enabled:
                program_service.recompute_tier(session, program, customer, now=now)
            elif customer.vip_tier != mark.old_tier:
                customer.vip_tier = mark.old_tier
                quiet.add(customer.id)
    # With VIP off no tier event is due; receivers read the restored tier from the customer.
    announce(session, job.merchant_id, job.id, quiet)
    return changed
