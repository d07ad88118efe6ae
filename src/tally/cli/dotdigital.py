"""`tally integrations dotdigital ...`: connect an API user, switch syncing on and off, sync
everyone now, and check for (and fix) drift."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.cli.support import (
    MerchantOption,
    console,
    domain_message,
    fail,
    load_settings,
    resolve_merchant,
    session_factory,
)
from tally.db.engine import unit_of_work
from tally.errors import Conflict, DomainError
from tally.integrations.dotdigital import reconcile, service
from tally.integrations.dotdigital.orm import ReconcileStatus, SyncJob, SyncJobStatus
from tally.integrations.dotdigital.service import JobView
from tally.integrations.dotdigital.sync import DEFAULT_OPTIONS, flush_merchant, run_manual_sync

dotdigital_app = typer.Typer(
    help="Dotdigital: connect an API user and sync loyalty data to contacts.",
    no_args_is_help=True,
)

T = TypeVar("T")


def _fail(message: str) -> NoReturn:
    fail(message)


def _print(text: str) -> None:
    console.print(text)


class _Command:
    """Settings, one session factory, and the merchant a command works on."""

    def __init__(self, merchant: int | None) -> None:
        self.settings = load_settings()
        self.factory: sessionmaker[Session] = session_factory(self.settings)
        with self.factory() as session:
            self.merchant_id = resolve_merchant(session, merchant)

    def uow(self) -> AbstractContextManager[Session]:
        """A unit of work bound to the merchant."""
        return unit_of_work(self.factory, merchant_id=self.merchant_id)

    def run(self, action: Callable[[], T]) -> T:
        """Run an action, turning refusals into an error message and exit code 2."""
        try:
            return action()
        except DomainError as error:
            _fail(domain_message(error))


def _read_password(password: str | None, password_stdin: bool) -> str:
    if password is not None and password_stdin:
        _fail("give --password or --password-stdin, not both")
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if password is not None:
        return password
    return str(typer.prompt("API user password", hide_input=True))


@dotdigital_app.command("connect")
def connect(
    username: Annotated[
        str, typer.Option("--username", "-u", help="The API user, apiuser-...@apiconnector.com.")
    ],
    password: Annotated[
        str | None,
        typer.Option(help="The API user's password (prefer --password-stdin: shell history)."),
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    merchant: MerchantOption = None,
) -> None:
    """Check an API user with Dotdigital and store it (the password encrypted)."""
    secret = _read_password(password, password_stdin)
    command = _Command(merchant)
    saved = command.run(
        lambda: service.save_credentials(
            command.uow,
            merchant_id=command.merchant_id,
            username=username,
            password=secret,
            settings=command.settings,
        )
    )
    _print(f"connected [bold]{saved.api_username}[/]; API endpoint {saved.api_endpoint}")
    if not saved.enabled:
        _print(
            "syncing is off: run `tally integrations dotdigital enable` to create the data "
            "fields and start"
        )


@dotdigital_app.command("enable")
def enable(merchant: MerchantOption = None) -> None:
    """Create the mapped data fields and start syncing changes."""
    command = _Command(merchant)
    result = command.run(
        lambda: service.enable(
            command.uow, merchant_id=command.merchant_id, settings=command.settings
        )
    )
    if result.created:
        _print(f"created data fields: {', '.join(result.created)}")
    if result.existing:
        _print(f"data fields already there: {', '.join(result.existing)}")
    _print("[green]syncing is on[/]: changes are sent from now on (`sync --all` sends everyone)")


@dotdigital_app.command("disable")
def disable(merchant: MerchantOption = None) -> None:
    """Stop syncing; the credentials and mapping are kept."""
    command = _Command(merchant)

    def work() -> None:
        with command.uow() as session:
            service.disable(session, merchant_id=command.merchant_id)

    command.run(work)
    _print(
        "syncing is off (credentials kept; `tally integrations dotdigital enable` starts it again)"
    )


@dotdigital_app.command("disconnect")
def disconnect(
    merchant: MerchantOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Forget the API user and the contacts waiting to be sent."""
    command = _Command(merchant)
    if not yes and not typer.confirm("Forget the Dotdigital credentials?"):
        raise typer.Exit(1)

    def work() -> bool:
        with command.uow() as session:
            return service.disconnect(session, merchant_id=command.merchant_id)

    if not command.run(work):
        _fail("Dotdigital is not connected")
    _print("Dotdigital disconnected: credentials and backlog removed")


def _when(value: object) -> str:
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else "-"


@dotdigital_app.command("status")
def show_status(merchant: MerchantOption = None) -> None:
    """Show the connection, backlog, recent failures and manual syncs."""
    command = _Command(merchant)
    with command.uow() as session:
        view = service.status(session, merchant_id=command.merchant_id, settings=command.settings)
    if not view.connected:
        _print("Dotdigital: [bold]not connected[/] (`tally integrations dotdigital connect`)")
    else:
        state = "[green]on[/]" if view.enabled else "[yellow]off[/]"
        _print(f"Dotdigital: connected as [bold]{view.api_username}[/], syncing {state}")
        _print(f"  API endpoint:      {view.api_endpoint}")
        _print(f"  call budget:       {view.calls_per_minute} calls per minute")
        _print(f"  last sync:         {_when(view.last_successful_sync_at)}")
        _print(f"  waiting contacts:  {view.backlog} ({view.backlog_retrying} being retried)")
        mapped = ", ".join(f"{k} -> {v}" for k, v in view.mapping.items() if v) or "nothing"
        _print(f"  fields:            {mapped}")
        if view.paused_until is not None:
            _print(f"  paused until:      {_when(view.paused_until)}")
        if view.last_error:
            _print(f"  last error:        {view.last_error} ({_when(view.last_error_at)})")
        for conflict in (view.field_check or {}).get("conflicts", []):
            _print(f"  [red]field conflict[/]:    {conflict.get('message')}")
    if view.recent_failures:
        table = Table("when", "customer", "email", "code", "reason", title="refused contacts")
        for f in view.recent_failures:
            table.add_row(
                _when(f.failed_at), str(f.customer_id or "-"), f.email or "-", f.code, f.reason
            )
        _print_table(table)
    if view.recent_jobs:
        table = Table(
            "job", "status", "total", "sent", "created", "updated", "failed", "started", "finished"
        )
        for j in view.recent_jobs:
            table.add_row(
                str(j.id),
                j.status,
                str(j.total),
                str(j.sent),
                str(j.created),
                str(j.updated),
                str(j.failed),
                _when(j.started_at),
                _when(j.finished_at),
            )
        _print_table(table)


def _print_table(table: Table) -> None:
    console.print(table)


def _running_job(command: _Command) -> int | None:
    with command.uow() as session:
        return session.scalar(
            select(SyncJob.id).where(
                SyncJob.merchant_id == command.merchant_id,
                SyncJob.status == SyncJobStatus.RUNNING,
            )
        )


@dotdigital_app.command("sync")
def sync(
    all_customers: Annotated[
        bool, typer.Option("--all", help="Send every customer (a manual sync).")
    ] = False,
    background: Annotated[
        bool, typer.Option(help="Only queue the sync for the worker; do not wait.")
    ] = False,
    merchant: MerchantOption = None,
) -> None:
    """Send every customer's loyalty data now, with a progress bar (resumes a running sync)."""
    if not all_customers:
        _fail("say --all to send every customer (changes are synced automatically)")
    command = _Command(merchant)

    def start() -> int:
        with command.uow() as session:
            return service.start_manual_sync(session, merchant_id=command.merchant_id).id

    job_id = _running_job(command)
    if job_id is None:
        job_id = command.run(start)
    else:
        _print(f"resuming manual sync {job_id}")
    if background:
        _print(
            f"manual sync {job_id} queued; the worker runs it "
            "(see `tally integrations dotdigital status`)"
        )
        return
    final = _run_with_progress(command, job_id)
    _print(
        f"manual sync {final.id} {final.status}: {final.total} customers, sent {final.sent}, "
        f"created {final.created}, updated {final.updated}, failed {final.failed} "
        f"({final.imports} import{'' if final.imports == 1 else 's'})"
    )
    if final.status != SyncJobStatus.FINISHED:
        _fail(final.last_error or "the sync did not finish")
    if final.failed:
        _print("refused contacts are listed by `tally integrations dotdigital status`")


def _run_with_progress(command: _Command, job_id: int) -> JobView:
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("syncing", total=None)

        def report(view: JobView) -> None:
            progress.update(
                task,
                total=max(view.total, view.sent) or None,
                completed=view.processed,
                description=f"sent {view.sent}, {view.imports_running} imports running",
            )

        try:
            return run_manual_sync(
                command.settings,
                command.factory,
                job_id,
                options=DEFAULT_OPTIONS,
                progress=report,
            )
        except Conflict as error:
            _fail(domain_message(error))


# Exit codes of `reconcile` (documented in the README).
RECONCILE_NO_DRIFT = 0
RECONCILE_DRIFT = 1
RECONCILE_UNFINISHED = 3
FIX_TIMEOUT_SECONDS = 300.0


def _value(value: object) -> str:
    return "(empty)" if value is None or value == "" else str(value)


def _print_differences(command: _Command, view: reconcile.ReconcileView, shown: int) -> None:
    with command.uow() as session:
        found = reconcile.list_differences(
            session, merchant_id=command.merchant_id, reconcile_id=view.id, limit=shown
        )
    if not found:
        return
    table = Table(
        "customer",
        Column("email", no_wrap=True),
        Column("field", no_wrap=True),
        "Tally",
        "Dotdigital",
        title="differences",
    )
    for item in found:
        if item.state == reconcile.MISSING:
            table.add_row(str(item.customer_id), item.email, "-", "-", "missing in Dotdigital")
        for diff in item.fields:
            table.add_row(
                str(item.customer_id),
                item.email,
                str(diff["field"]),
                _value(diff["tally"]),
                _value(diff["dotdigital"]),
            )
    _print_table(table)
    if view.drifted > len(found):
        _print(f"… and {view.drifted - len(found)} more (the Dotdigital admin page lists them)")


def _fix(command: _Command) -> int:
    """Queue the drifted customers and run the sync until they are sent; how many are left."""

    def queue() -> int:
        with command.uow() as session:
            return reconcile.queue_fixes(session, merchant_id=command.merchant_id)

    queued = command.run(queue)

    def backlog() -> int:
        with command.uow() as session:
            return reconcile.backlog_size(session, merchant_id=command.merchant_id)

    left = reconcile.flush_fixes(
        lambda: flush_merchant(command.settings, command.factory, command.merchant_id),
        backlog,
        timeout_seconds=FIX_TIMEOUT_SECONDS,
    )
    if left:
        _print(f"queued {queued} drifted contacts; {left} still waiting (the worker sends them)")
    else:
        _print(f"[green]sent {queued} drifted contacts[/] to Dotdigital")
    return left


@dotdigital_app.command("reconcile")
def reconcile_command(
    fix: Annotated[
        bool, typer.Option("--fix", help="Send the drifted contacts again (only those).")
    ] = False,
    shown: Annotated[int, typer.Option("--show", min=0, help="Differences to list at most.")] = 50,
    merchant: MerchantOption = None,
) -> None:
    """Compare every contact in Dotdigital with Tally's values; exit 1 when some differ.

    Exit codes: 0 nothing differs (or --fix sent every drifted contact), 1 some differ (or are
    still waiting to be sent), 2 refused, 3 not finished: the call budget is spent, and the next
    run (or the worker) continues where this one stopped.
    """
    command = _Command(merchant)

    def start() -> int:
        with command.uow() as session:
            return reconcile.start_reconcile(session, merchant_id=command.merchant_id).id

    view = reconcile.run_reconcile(command.settings, command.factory, command.run(start))
    if view.status == ReconcileStatus.FAILED:
        _fail(view.last_error or "the drift check failed")
    if view.status == ReconcileStatus.RUNNING:
        _print(
            f"drift check {view.id} not finished: {view.contacts_read} contacts read in "
            f"{view.pages_read} pages so far, {view.drifted} differ; the call budget is spent "
            "or Dotdigital asked to wait. Run the command again (or let the worker) continue."
        )
        raise typer.Exit(RECONCILE_UNFINISHED)
    missing = f" ({view.missing_count} missing in Dotdigital)" if view.missing_count else ""
    _print(
        f"drift check {view.id}: [bold]{view.drifted} of {view.compared} contacts differ[/]"
        f"{missing}; {view.contacts_read} contacts read in {view.pages_read} pages"
    )
    _print_differences(command, view, shown)
    if not view.drifted:
        raise typer.Exit(RECONCILE_NO_DRIFT)
    if fix and not _fix(command):
        raise typer.Exit(RECONCILE_NO_DRIFT)
    raise typer.Exit(RECONCILE_DRIFT)
