"""`tally outbox`: list deliveries, show one with every recorded attempt, retry a failed one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from tally.cli.support import command_unit_of_work, console, resolve_merchant
from tally.outbox import service

outbox_app = typer.Typer(
    help="Outbox deliveries: what is waiting, what failed, and every attempt.",
    no_args_is_help=True,
)

# Ids are 64-bit integers; anything larger cannot name a row (and PostgreSQL would overflow).
MAX_ID = 2**63 - 1
MessageId = Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The outbox message's id.")]


def _when(value: datetime | None, timespec: str = "seconds") -> str:
    return value.isoformat(timespec=timespec) if value else ""


def _plain(value: object) -> Text:
    # Error texts and payloads are outside data: Text keeps Rich from reading [brackets] as markup.
    return Text("" if value is None else str(value))


@outbox_app.command("list")
def list_messages(
    status: Annotated[
        str | None,
        typer.Option(
            help="Only messages with this status: pending, processing, failed, delivered."
        ),
    ] = None,
    merchant: Annotated[
        int | None,
        typer.Option("--merchant", "-m", help="Only this merchant's messages (default: all)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
) -> None:
    """Show outbox messages, newest first."""
    with command_unit_of_work() as session:
        # Messages of every merchant by default: an operator looks at the queue as a whole.
        merchant_id = resolve_merchant(session, merchant) if merchant is not None else None
        rows = service.list_messages(session, status=status, merchant_id=merchant_id, limit=limit)
    table = Table(
        "id", "merchant", "event", "handler", "status", "attempts", "due / finished", "last error"
    )
    for message in rows:
        finished = message.finished_at if message.status in ("done", "failed") else None
        table.add_row(
            str(message.id),
            str(message.merchant_id or ""),
            message.event_type,
            message.handler,
            service.status_name(message.status),
            str(message.attempts),
            _when(finished or message.available_at),
            _plain(message.last_error),
        )
    console.print(table)
    console.print(f"{len(rows)} message{'s' if len(rows) != 1 else ''}")


@outbox_app.command("show")
def show_message(message_id: MessageId) -> None:
    """Show one message and every attempt at delivering it."""
    with command_unit_of_work() as session:
        message = service.get_message(session, message_id=message_id)
        attempts = service.message_attempts(session, message_id=message_id)
    facts = Table.grid(padding=(0, 2))
    facts.add_row("message", str(message.id))
    facts.add_row("merchant", str(message.merchant_id or ""))
    facts.add_row("event", message.event_type)
    facts.add_row("handler", message.handler)
    facts.add_row("status", service.status_name(message.status))
    facts.add_row("attempts", str(message.attempts))
    facts.add_row("created", _when(message.created_at))
    facts.add_row("due", _when(message.available_at))
    facts.add_row("finished", _when(message.finished_at))
    facts.add_row("payload", _plain(message.payload))
    facts.add_row("last error", _plain(message.last_error))
    console.print(facts)
    table = Table("#", "started", "ms", "outcome", "status", "error", title="attempts")
    for attempt in attempts:
        table.add_row(
            str(attempt.attempt),
            _when(attempt.started_at, "milliseconds"),
            str(attempt.duration_ms),
            attempt.outcome,
            str(attempt.status_code or ""),
            _plain(attempt.error),
        )
    console.print(table if attempts else "no attempts yet")


@outbox_app.command("retry")
def retry_message(message_id: MessageId) -> None:
    """Put a failed message back in the queue, due now (its attempts are kept)."""
    with command_unit_of_work() as session:
        message = service.retry_message(session, message_id=message_id)
    console.print(
        f"message {message.id} is pending again and due now; attempt {message.attempts + 1} next"
    )
