"""`tally mail`: preview notification emails and read the mail log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tally.cli.support import MerchantOption, command_unit_of_work, console, resolve_merchant
from tally.config import Settings

mail_app = typer.Typer(help="Notification emails: previews and the mail log.", no_args_is_help=True)


@mail_app.command("preview")
def preview(
    email_type: Annotated[str, typer.Argument(help="e.g. points_earned, reward_redeemed")],
    customer: Annotated[str, typer.Option("--customer", "-c", help="The customer's email.")],
    merchant: MerchantOption = None,
    html_out: Annotated[
        Path | None, typer.Option("--html-out", help="Also write the HTML part to this file.")
    ] = None,
) -> None:
    """Render an email for a customer (sample values for points, rewards and so on)."""
    from tally.customers import service as customers
    from tally.notifications import service

    settings = Settings()
    with command_unit_of_work(settings) as session:
        merchant_id = resolve_merchant(session, merchant)
        kind = service.parse_email_type(email_type)
        found = customers.get_customer_by_email(session, merchant_id, customer)
        rendered = service.render_for_customer(
            session,
            settings=settings,
            merchant_id=merchant_id,
            customer_id=found.id,
            email_type=kind,
        )
        enabled = service.template_enabled(session, merchant_id=merchant_id, email_type=kind)
    # Plain echo: template text may contain [brackets] that Rich would read as markup.
    typer.echo(f"Subject: {rendered.subject}")
    if not enabled:
        typer.echo(f"(note: {kind.value} emails are switched off for this merchant)")
    typer.echo("")
    typer.echo(rendered.text)
    if html_out is not None:
        html_out.parent.mkdir(parents=True, exist_ok=True)
        html_out.write_text(rendered.html, encoding="utf-8")
        typer.echo(f"HTML part written to {html_out}")


@mail_app.command("list")
def list_emails(
    status: Annotated[
        str | None,
        typer.Option(
            help="Only emails with this status: queued, sending, sent, failed, suppressed."
        ),
    ] = None,
    merchant: MerchantOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
) -> None:
    """Show the mail log, newest first (and where the .eml files are without an SMTP server)."""
    from tally.notifications import service
    from tally.notifications.transport import find_stored

    settings = Settings()
    with command_unit_of_work(settings) as session:
        merchant_id = resolve_merchant(session, merchant)
        rows, total = service.list_emails(
            session, merchant_id=merchant_id, status=status, limit=limit
        )
        directory = service.file_directory_for(session, settings=settings, merchant_id=merchant_id)
    columns = ["id", "created", "type", "to", "status", "tries", "subject / error"]
    if directory is not None:
        columns.append("file")
    table = Table(*columns, title=f"mail log ({len(rows)} of {total})")
    for email in rows:
        cells = [
            str(email.id),
            email.created_at.isoformat(timespec="seconds"),
            email.email_type,
            email.recipient,
            email.status,
            str(email.attempts),
            email.last_error or email.subject or "",
        ]
        if directory is not None:
            path = find_stored(directory, email.message_id) if email.message_id else None
            cells.append(str(path) if path else "")
        table.add_row(*cells)
    console.print(table)
    if directory is not None:
        console.print(
            f"No SMTP server is configured: emails are written as .eml files to {directory}"
        )
