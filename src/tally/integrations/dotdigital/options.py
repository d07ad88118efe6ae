"""How the Dotdigital sync paces itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from tally.integrations.dotdigital.service import ClientFactory, default_client_factory

# Contacts per bulk import. Dotdigital's own plugins send about 2,000, but every import also
# costs at least one status read, so 2,000 per import needs 1,000 calls per million contacts;
# 5,000 (about 1.3 MB of JSON, far under the 50 MB limit) keeps a million to 400 calls.
DEFAULT_IMPORT_CONTACTS = 5000


@dataclass(frozen=True)
class SyncOptions:
    """How the sync paces itself; the defaults suit a production Dotdigital account."""

    flush_every: timedelta = timedelta(seconds=2)
    manual_every: timedelta = timedelta(seconds=2)
    # A backlog larger than this goes out as a bulk import instead of one call per contact.
    bulk_threshold: int = 100
    import_batch_size: int = DEFAULT_IMPORT_CONTACTS
    # Dotdigital allows 25 imports in progress per account.
    max_active_imports: int = 25
    # Bulk imports of the automatic sync in flight per merchant.
    max_auto_imports: int = 2
    # First look at an import this long after starting it; while it is still running, the
    # wait between looks grows with its age (1, 2, 4, 8... s) up to import_poll_max_seconds.
    import_poll_seconds: float = 1.0
    import_poll_max_seconds: float = 30.0
    # An import still unfinished after this long is given up (its contacts are retried).
    import_give_up_seconds: float = 3600.0
    # Most single upserts one flush run sends for one merchant.
    contacts_per_run: int = 500
    # How long one run of a scheduled job keeps working before it yields.
    run_seconds: float = 20.0
    # Leases outlive a run plus one import start's timeout (the client allows an import 121 s,
    # as Dotdigital asks; the lease is renewed just before each start); a dead worker's lease
    # expires after this.
    lease_seconds: float = 180.0
    # Single calls; bulk import starts get the client's longer IMPORT_TIMEOUT_SECONDS.
    client_timeout_seconds: float = 30.0
    # How long after an import start that got no answer its contacts are read back to learn
    # whether Dotdigital started it anyway (see bulk_imports); nothing else of the job is
    # started meanwhile.
    unanswered_wait_seconds: float = 300.0
    # Pause after a 429 that does not say when the limit resets.
    rate_limit_pause_seconds: float = 60.0
    # Pause after Dotdigital refuses the credentials (401) or the region (403).
    auth_pause_seconds: float = 300.0
    # Drift checks (reconcile.py): contacts per page read back (Dotdigital allows 1 to 5,000),
    # and how often the worker moves running checks along.
    reconcile_page_size: int = 5000
    reconcile_every: timedelta = timedelta(seconds=2)
    client_factory: ClientFactory = default_client_factory


DEFAULT_OPTIONS = SyncOptions()
