"""`tally import`: bring customers' point balances and past orders in from CSV files."""

from __future__ import annotations

import functools
import getpass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from tally.cli.support import (
    MerchantOption,
    cli_audit_actor,
    command_unit_of_work,
    console,
    domain_message,
    err_console,
    fail,
    resolve_merchant,
    session_factory,
)
from tally.config import Settings
from tally.errors import DomainError

import_app = typer.Typer(
    help="Import customers (point balances) and past orders from CSV files.", no_args_is_help=True
)

DryRunOption = Annotated[
    bool,
    typer.Option("--dry-run", help="Check the file and show what would happen; write nothing."),
]
SkipInvalidOption = Annotated[
    bool,
    typer.Option(
        "--skip-invalid",
        help="Import the valid rows and write the others, with a reason column, to a CSV file "
        "(by default a file with any invalid row is refused whole).",
    ),
]
RejectedOption = Annotated[
    Path | None,
    typer.Option(
        "--rejected-file", help="Where --skip-invalid writes the rejected rows (FILE.rejected.csv)."
    ),
]
BatchOption = Annotated[int, typer.Option("--batch-size", hidden=True, min=0)]


class TemplateKind(StrEnum):
    """Which template."""

    CUSTOMERS = "customers"
    ORDERS = "orders"


class PointsChoice(StrEnum):
    """--points values."""

    REPLACE = "replace"
    ADD = "add"


class _RateColumn(ProgressColumn):
    """Rows per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        elapsed = task.elapsed
        if speed is None and elapsed:
            speed = task.completed / elapsed
        shown = "- rows/s" if speed is None else f"{speed:,.0f} rows/s"
        return Text(shown, style="progress.data.speed")


def _domain_failure(exc: DomainError) -> NoReturn:
    from tally.imports.service import ImportFailed, ImportRefused

    if isinstance(exc, ImportFailed):
        # Not the input's fault (exit code 2 means bad input); the error itself is logged.
        err_console.print(f"[bold red]error:[/] {exc.detail}")
        raise typer.Exit(1)
    if isinstance(exc, ImportRefused):
        _print_errors(exc.job.errors, exc.job.error_count, stderr=True)
        fail(exc.detail)
    fail(domain_message(exc))


def _merchant_id(settings: Settings, merchant: int | None) -> int:
    with command_unit_of_work(settings) as session:
        return resolve_merchant(session, merchant)


def _run(
    *,
    file: Path,
    options: object,
    merchant: int | None,
    dry_run: bool,
    rejected_file: Path | None,
    batch_size: int | None,
) -> None:
    from tally.imports import service
    from tally.outbox.registry import load_plugins

    if not file.is_file():
        fail(f"{file} does not exist or is not a file")
    settings = Settings()
    load_plugins(settings)
    merchant_id = _merchant_id(settings, merchant)
    factory = session_factory(settings)
    assert isinstance(options, service.CustomerImportOptions | service.OrderImportOptions)
    size = batch_size or service.DEFAULT_BATCH_SIZE
    with Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        tasks: dict[str, object] = {}

        def report(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase.capitalize(), total=total)
            task = tasks[phase]
            progress.update(task, completed=done, total=total)  # type: ignore[arg-type]

        # Who ran it, as the job records it: the operating system account at the terminal.
        created_by = f"cli:{getpass.getuser()}"
        try:
            # A dry run checks the whole file the same way and counts, writing only the job.
            # The start is one audit event; the rows are not audited one by one.
            start = (
                service.preview_import
                if dry_run
                else functools.partial(service.run_import, actor=cli_audit_actor())
            )
            job = start(
                factory,
                merchant_id=merchant_id,
                path=file,
                options=options,
                progress=report,
                batch_size=size,
                created_by=created_by,
            )
        except DomainError as exc:
            progress.stop()
            _domain_failure(exc)
    _print_summary(job, dry_run=dry_run)
    with factory() as session:
        for note in service.import_notes(session, merchant_id=merchant_id, options=options):
            console.print(f"[yellow]Note: {note}.[/]")
    if job.errors:
        _print_errors(job.errors, job.error_count)
    if job.collisions:
        _print_collisions(job.collisions)
    if not dry_run and job.invalid_count:
        target = rejected_file or file.with_name(f"{file.stem}.rejected.csv")
        with factory() as session, target.open("w", encoding="utf-8", newline="") as out:
            for chunk in service.rejected_csv(session, merchant_id=merchant_id, job_id=job.id):
                out.write(chunk)
        console.print(f"{job.invalid_count} rejected rows written to [bold]{target}[/]")
    if dry_run and job.invalid_count and not job.options.get("skip_invalid"):
        # The same exit code as the real run would give, so a script can check a file first.
        raise typer.Exit(2)


def _print_summary(job: object, *, dry_run: bool) -> None:
    from tally.imports.orm import ImportJob, ImportKind

    assert isinstance(job, ImportJob)
    verb = "would be " if dry_run else ""
    title = (
        f"Import {job.id}: {job.kind} from {job.file_name} ({job.file_format}) — {job.status}"
        + (" (dry run: nothing was written)" if dry_run else "")
    )
    table = Table("", "rows", title=title, show_header=False)
    table.add_row("rows in the file", f"{job.total_rows:,}")
    if job.kind == ImportKind.CUSTOMERS:
        table.add_row(f"new customers {verb}created", f"{job.new_count:,}")
        table.add_row(f"customers {verb}updated", f"{job.updated_count:,}")
        table.add_row("unchanged (skipped)", f"{job.skipped_count:,}")
    else:
        table.add_row(f"orders {verb}recorded", f"{job.new_count:,}")
        table.add_row("already known (skipped)", f"{job.skipped_count:,}")
        table.add_row(f"guest customers {verb}created", f"{job.customers_created:,}")
    table.add_row("invalid rows", f"{job.invalid_count:,}")
    table.add_row(f"points {verb}issued", f"{job.points_issued:,}")
    if not dry_run:
        table.add_row("emails queued", f"{job.emails_queued:,}")
    if job.kind == ImportKind.CUSTOMERS:
        mode = job.options.get("points", "replace")
        table.add_row(
            "points mode",
            "add: the file's points are added to balances"
            if mode == "add"
            else "replace: the file's points become the migrated balance",
        )
    options = ", ".join(f"{name}={value}" for name, value in sorted(job.options.items()))
    table.add_row("options", options)
    console.print(table)
    if dry_run and job.invalid_count and not job.options.get("skip_invalid"):
        console.print(
            f"[yellow]Importing this file as it is would be refused: {job.invalid_count:,} "
            f"invalid {'row' if job.invalid_count == 1 else 'rows'}. Correct the file, or add "
            "--skip-invalid to import the other rows and get the rejected ones as a CSV.[/]"
        )


def _print_collisions(collisions: list[dict[str, object]]) -> None:
    table = Table(
        "row",
        "order id",
        "already known",
        title="Order ids already known for another customer or total (skipped)",
    )
    for found in collisions:
        table.add_row(str(found["row"]), str(found["order_id"]), str(found["reason"]))
    console.print(table)


def _print_errors(errors: list[dict[str, object]], count: int, *, stderr: bool = False) -> None:
    table = Table(
        "row",
        "column",
        "value",
        "expected",
        title="1 error" if count == 1 else f"{count} errors (first {len(errors)})",
    )
    for error in errors[:50]:
        table.add_row(
            str(error["row"]), str(error["column"]), str(error["value"]), str(error["expected"])
        )
    (err_console if stderr else console).print(table)


@import_app.command("template")
def template(
    kind: Annotated[TemplateKind, typer.Argument(help="customers or orders")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write it to this file.")
    ] = None,
) -> None:
    """Print (or save) the CSV template for a kind of import, with example rows."""
    from tally.imports.orm import ImportKind
    from tally.imports.service import template_csv

    text = template_csv(ImportKind(kind.value))
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    console.print(f"template written to {output}")


@import_app.command("customers")
def import_customers(
    file: Annotated[Path, typer.Argument(help="CSV file: the Tally template or an export.")],
    merchant: MerchantOption = None,
    dry_run: DryRunOption = False,
    skip_invalid: SkipInvalidOption = False,
    points: Annotated[
        PointsChoice,
        typer.Option(
            help="replace: the file's points become the migrated balance (importing it again "
            "changes nothing); add: they are added to the balance."
        ),
    ] = PointsChoice.REPLACE,
    award_create_account: Annotated[
        bool,
        typer.Option(
            "--award-create-account",
            help="Give each new customer the create-account points and queue their email.",
        ),
    ] = False,
    rejected_file: RejectedOption = None,
    batch_size: BatchOption = 0,
) -> None:
    """Import customers and their point balances."""
    from tally.imports.service import CustomerImportOptions, PointsMode

    options = CustomerImportOptions(
        points=PointsMode(points.value),
        award_create_account=award_create_account,
        skip_invalid=skip_invalid,
    )
    _run(
        file=file,
        options=options,
        merchant=merchant,
        dry_run=dry_run,
        rejected_file=rejected_file,
        batch_size=batch_size or None,
    )


@import_app.command("orders")
def import_orders(
    file: Annotated[Path, typer.Argument(help="CSV file: the Tally template or Shopify's export.")],
    merchant: MerchantOption = None,
    dry_run: DryRunOption = False,
    skip_invalid: SkipInvalidOption = False,
    vip_only: Annotated[
        bool,
        typer.Option("--vip-only", help="Count the orders toward VIP tiers only, without points."),
    ] = False,
    send_create_account_emails: Annotated[
        bool,
        typer.Option(
            "--send-create-account-emails",
            help="Invite guests who received points to create an account and claim them.",
        ),
    ] = False,
    rejected_file: RejectedOption = None,
    batch_size: BatchOption = 0,
) -> None:
    """Import past orders (points by the earning rules in force, without per-period limits)."""
    from tally.imports.service import OrderImportOptions

    options = OrderImportOptions(
        vip_only=vip_only,
        send_create_account_emails=send_create_account_emails,
        skip_invalid=skip_invalid,
    )
    _run(
        file=file,
        options=options,
        merchant=merchant,
        dry_run=dry_run,
        rejected_file=rejected_file,
        batch_size=batch_size or None,
    )


@import_app.command("list")
def list_jobs(
    merchant: MerchantOption = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
) -> None:
    """List imports, newest first."""
    from tally.imports import service

    with command_unit_of_work() as session:
        merchant_id = resolve_merchant(session, merchant)
        jobs, total = service.list_imports(session, merchant_id=merchant_id, limit=limit)
        table = Table(
            "id",
            "created",
            "by",
            "kind",
            "file",
            "status",
            "rows",
            "new",
            "updated",
            "skipped",
            "invalid",
            "points",
            title=f"imports ({total})",
        )
        for job in jobs:
            table.add_row(
                str(job.id),
                job.created_at.isoformat(timespec="seconds"),
                job.created_by,
                job.kind,
                job.file_name,
                job.status,
                f"{job.total_rows:,}",
                f"{job.new_count:,}",
                f"{job.updated_count:,}",
                f"{job.skipped_count:,}",
                f"{job.invalid_count:,}",
                f"{job.points_issued:,}",
            )
    console.print(table)


@import_app.command("show")
def show(job_id: int, merchant: MerchantOption = None) -> None:
    """Show one import: its options, counts, checksum and errors."""
    from tally.imports import service
    from tally.imports.orm import ImportKind

    with command_unit_of_work() as session:
        merchant_id = resolve_merchant(session, merchant)
        job = service.get_import(session, merchant_id=merchant_id, job_id=job_id)
    _print_summary(job, dry_run=False)
    console.print(f"checksum (SHA-256): {job.checksum}")
    console.print(f"started by {job.created_by} at {job.created_at.isoformat(timespec='seconds')}")
    if job.kind == ImportKind.ORDERS:
        console.print(f"rows applied (rejected rows, then orders by date): {job.cursor}")
    else:
        console.print(f"last row applied: {job.cursor}")
    if job.failure_reason:
        console.print(f"[red]{job.failure_reason}[/]")
    if job.reverted_at:
        console.print(f"reverted at {job.reverted_at.isoformat(timespec='seconds')}")
    if job.errors:
        _print_errors(job.errors, job.error_count)


@import_app.command("rejected")
def rejected(
    job_id: int,
    merchant: MerchantOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
) -> None:
    """Print (or save) the rows an import left out, with a reason column."""
    from tally.imports import service

    with command_unit_of_work() as session:
        merchant_id = resolve_merchant(session, merchant)
        chunks = service.rejected_csv(session, merchant_id=merchant_id, job_id=job_id)
        if output is None:
            for chunk in chunks:
                typer.echo(chunk, nl=False)
            return
        with output.open("w", encoding="utf-8", newline="") as out:
            for chunk in chunks:
                out.write(chunk)
    console.print(f"rejected rows written to {output}")


@import_app.command("revert")
def revert(job_id: int, merchant: MerchantOption = None) -> None:
    """Take back the points an import credited (refused if some were spent since)."""
    from tally.imports import service
    from tally.outbox.registry import load_plugins

    settings = Settings()
    load_plugins(settings)
    merchant_id = _merchant_id(settings, merchant)
    try:
        job = service.revert_import(
            session_factory(settings),
            merchant_id=merchant_id,
            job_id=job_id,
            actor=cli_audit_actor(),
        )
    except DomainError as exc:
        _domain_failure(exc)
    console.print(f"import {job.id} reverted: {job.points_issued:,} points taken back")
