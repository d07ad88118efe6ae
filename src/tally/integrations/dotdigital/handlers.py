"""Outbox handlers and scheduled jobs of the Dotdigital integration (a worker plugin).

The handlers only mark the customer as changed, which is one indexed lookup when the merchant
has no enabled connection and one upsert when it has; the scheduled flush does the sending.
"""

from __future__ import annotations

from typing import Any

from tally.db.engine import unit_of_work
from tally.integrations.dotdigital.auto_sync import run_flush
from tally.integrations.dotdigital.manual_sync import run_manual_syncs
from tally.integrations.dotdigital.options import DEFAULT_OPTIONS, SyncOptions
from tally.integrations.dotdigital.pending import mark_dirty, mark_dirty_many
from tally.integrations.dotdigital.reconcile import run_reconciles
from tally.integrations.dotdigital.service import is_sync_enabled
from tally.outbox.events import (
    CustomerEnrolled,
    CustomersImported,
    CustomerUpdated,
    PointsBalanceChanged,
    VipTierChanged,
)
from tally.outbox.registry import HandlerContext, JobContext, Registry

HANDLER_NAME = "dotdigital.mark_contact"
FLUSH_JOB = "dotdigital.flush"
MANUAL_SYNC_JOB = "dotdigital.manual_sync"
RECONCILE_JOB = "dotdigital.reconcile"
# Profile changes that alter what Dotdigital receives (names are not synced).
SYNCED_PROFILE_FIELDS = frozenset(
    # Consent given later lets the sync create the contact it left out.
    {"birthday", "email", "referral_code", "referral_url", "accepts_marketing"}
)


def mark_contact(context: HandlerContext, payload: dict[str, Any]) -> None:
    """Mark the event's customer for the next flush, if the merchant syncs to Dotdigital."""
    merchant_id = int(payload["merchant_id"])
    customer_id = int(payload["customer_id"])
    with unit_of_work(context.session_factory) as session:
        # A customer deleted since the event is skipped: nothing left to send.
        if is_sync_enabled(session, merchant_id):
            mark_dirty(session, merchant_id=merchant_id, customer_id=customer_id)


def mark_imported_contacts(context: HandlerContext, payload: dict[str, Any]) -> None:
    """Mark every customer of an import batch in one statement, if the merchant syncs."""
    merchant_id = int(payload["merchant_id"])
    with unit_of_work(context.session_factory) as session:
        if is_sync_enabled(session, merchant_id):
            mark_dirty_many(
                session,
                merchant_id=merchant_id,
                customer_ids=[int(value) for value in payload["customer_ids"]],
            )


def mark_updated_contact(context: HandlerContext, payload: dict[str, Any]) -> None:
    """Like ``mark_contact``, for profile changes that touch a synced fact."""
    if SYNCED_PROFILE_FIELDS.isdisjoint(payload.get("fields") or ()):
        return
    mark_contact(context, payload)


def register(registry: Registry, options: SyncOptions = DEFAULT_OPTIONS) -> None:
    """Subscribe the handlers and schedule the flush, manual sync and drift check jobs."""
    for event in (PointsBalanceChanged, VipTierChanged, CustomerEnrolled):
        registry.subscribe(event.event_type, HANDLER_NAME, mark_contact)
    registry.subscribe(CustomerUpdated.event_type, HANDLER_NAME, mark_updated_contact)
    registry.subscribe(CustomersImported.event_type, HANDLER_NAME, mark_imported_contacts)

    def flush(context: JobContext) -> None:
        run_flush(context, options)

    def manual_syncs(context: JobContext) -> None:
        run_manual_syncs(context, options)

    registry.schedule(FLUSH_JOB, options.flush_every, flush)
    registry.schedule(MANUAL_SYNC_JOB, options.manual_every, manual_syncs)

    def reconciles(context: JobContext) -> None:
        run_reconciles(context, options)

    registry.schedule(RECONCILE_JOB, options.reconcile_every, reconciles)
