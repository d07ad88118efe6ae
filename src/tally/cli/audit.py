"""`tally audit list`: the audit log of a merchant, newest first."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from tally.audit.service import AuditFilter, event_json, list_events
from tally.cli.support import MerchantOption, command_unit_of_work, console, resolve_merchant

audit_app = typer.Typer(help="The audit log: who changed what, and when.", no_args_is_help=True)


def _compact(value: dict[str, Any] | None) -> Text:
    # Values are outside data: Text keeps Rich from reading [brackets] as markup.
    return Text("" if not value else json.dumps(value, sort_keys=True, ensure_ascii=False))


@audit_app.command("list")
def list_audit_events(
    merchant: MerchantOption = None,
    actor: Annotated[
        str | None, typer.Option(help="Only this actor: admin:ana@shop.com, cli:ana, api-key:…")
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Only this target: program, customer, customer:12, …")
    ] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this action or its start: points.adjusted, program")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array instead of a table.")] = (
        False
    ),
) -> None:
    """Show the audit log, newest first."""
    with command_unit_of_work() as session:
        merchant_id = resolve_merchant(session, merchant)
        events, total = list_events(
            session,
            merchant_id=merchant_id,
            where=AuditFilter(actor=actor, target=target, action=action),
            limit=limit,
        )
    if as_json:
        typer.echo(json.dumps([event_json(e) for e in events], indent=2, ensure_ascii=False))
        return
    table = Table("id", "when", "actor", "action", "target", "before", "after")
    for event in events:
        table.add_row(
            str(event.id),
            event.occurred_at.isoformat(timespec="seconds"),
            Text(event.actor),
            event.action,
            Text(f"{event.target_type} {event.target_id or ''}".strip()),
            _compact(event.before),
            _compact(event.after),
        )
    console.print(table)
    console.print(f"{len(events)} of {total} events")
