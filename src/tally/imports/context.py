"""One import run as its passes see it: the job, the options, the program, and the batch size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from tally.imports.customer_writer import CustomerRun
from tally.imports.options import CustomerImportOptions, ImportOptions, OrderImportOptions
from tally.imports.order_planner import OrderRun
from tally.imports.orm import ImportKind
from tally.program import service as program_service

DEFAULT_BATCH_SIZE = 20_000
"""Rows per transaction."""

ProgressCallback = Callable[[str, int, int], None]
"""Called with a phase ("checking", "importing"), rows done and rows in all (an estimate)."""


@dataclass
class RunContext:
    """One import run: the job, the options, and what the batches need."""

    merchant_id: int
    job_id: int
    kind: ImportKind
    options: ImportOptions
    program: program_service.Program
    now: datetime
    labels: dict[str, str]
    checksum: str
    generation: int
    batch_size: int
    prior_imports: bool = True
    known_orders_possible: bool = True

    def customer_run(self) -> CustomerRun:
        """The customer-batch context."""
        options = self.options
        assert isinstance(options, CustomerImportOptions)
        # 20 hex digits (80 bits) of the checksum tell files apart; the job keeps all 64.
        prefix = f"import:{self.checksum[:20]}"
        if self.generation:
            prefix += f":g{self.generation}"
        return CustomerRun(
            merchant_id=self.merchant_id,
            job_id=self.job_id,
            key_prefix=prefix,
            points_mode=options.points,
            award_create_account=options.award_create_account,
            program=self.program,
            now=self.now,
        )

    def order_run(self) -> OrderRun:
        """The order-batch context."""
        options = self.options
        assert isinstance(options, OrderImportOptions)
        return OrderRun(
            merchant_id=self.merchant_id,
            job_id=self.job_id,
            reward_points=not options.vip_only,
            program=self.program,
            now=self.now,
            known_orders_possible=self.known_orders_possible,
        )
