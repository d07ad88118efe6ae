"""`tally export customers|ledger` (streamed CSV) and `tally points liability`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.table import Table
from sqlalchemy.orm import Session

from tally.cli.support import (
    MerchantOption,
    command_unit_of_work,
    console,
    load_settings,
    resolve_merchant,
    session_factory,
)
from tally.db import engine
from tally.reports import exports
from tally.reports.liability import points_liability

export_app = typer.Typer(help="Export customers or the ledger as CSV.", no_args_is_help=True)

OutputOption = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write to this file instead of standard output."),
]


def _stream(
    export: Callable[..., Iterator[str]], merchant: int | None, output: Path | None
) -> None:
    settings = load_settings()
    with command_unit_of_work(settings) as session:
        merchant_id = resolve_merchant(session, merchant)
    factory = session_factory(settings)

    def open_session() -> AbstractContextManager[Session]:
        return engine.unit_of_work(factory, merchant_id=merchant_id)

    def write(stream: TextIO) -> None:
        for piece in export(open_session, merchant_id=merchant_id):
            stream.write(piece)

    if output is None:
        write(sys.stdout)
        sys.stdout.flush()
        return
    with output.open("w", encoding="utf-8", newline="") as file:
        write(file)
    typer.echo(f"written to {output}", err=True)


@export_app.command("customers")
def export_customers(merchant: MerchantOption = None, output: OutputOption = None) -> None:
    """Every customer: balance, tier, next expiry date and the points expiring then."""
    _stream(exports.export_customers, merchant, output)


@export_app.command("ledger")
def export_ledger(merchant: MerchantOption = None, output: OutputOption = None) -> None:
    """Every ledger entry, customer by customer, with the balance after each one."""
    _stream(exports.export_ledger, merchant, output)


def liability(merchant: MerchantOption = None) -> None:
    """Outstanding points, what they are worth at the rewards' rates, what expires soon."""
    with command_unit_of_work() as session:
        merchant_id = resolve_merchant(session, merchant)
        report = points_liability(session, merchant_id=merchant_id)
    console.print(
        f"outstanding: [bold]{report.outstanding_points}[/] points held by "
        f"{report.customers_with_points} customers"
    )
    if report.best is None:
        console.print("value: no enabled reward takes a money amount off, so points have no value")
    else:
        console.print(
            f"value: [bold]{report.value} {report.currency}[/] at the best rate, "
            f"{report.best.name} ({report.best.explanation})"
        )
    table = Table("reward", "type", "rate", "outstanding points worth")
    for rate in report.rewards:
        table.add_row(
            rate.name,
            rate.reward_type,
            rate.explanation,
            f"{rate.value} {report.currency}" if rate.value is not None else "no money value",
        )
    if report.rewards:
        console.print(table)
    if report.expiry_mode == "off":
        console.print("expiring: points expiry is off")
        return
    for days, points in report.expiring.items():
        console.print(f"expiring within {days} days: {points} points")
