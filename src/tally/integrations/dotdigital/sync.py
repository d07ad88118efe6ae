"""The Dotdigital sync's entry points, for callers that want them from one place.

The work itself lives in ``auto_sync`` (changed customers), ``manual_sync`` (everyone),
``call_budget``, ``leases``, ``pending`` and ``bulk_imports``.
"""

from __future__ import annotations

from tally.integrations.dotdigital.auto_sync import (
    FlushReport,
    flush_all,
    flush_merchant,
    run_flush,
)
from tally.integrations.dotdigital.call_budget import Grant, pause_merchant, take_calls
from tally.integrations.dotdigital.manual_sync import (
    Step,
    StepState,
    advance_job,
    read_job,
    run_manual_sync,
    run_manual_syncs,
)
from tally.integrations.dotdigital.options import DEFAULT_OPTIONS, SyncOptions

__all__ = [
    "DEFAULT_OPTIONS",
    "FlushReport",
    "Grant",
    "Step",
    "StepState",
    "SyncOptions",
    "advance_job",
    "flush_all",
    "flush_merchant",
    "pause_merchant",
    "read_job",
    "run_flush",
    "run_manual_sync",
    "run_manual_syncs",
    "take_calls",
]
