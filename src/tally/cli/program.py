"""`tally program`: the program settings as a YAML file, applied as a new version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tally.cli.support import (
    MerchantOption,
    cli_actor,
    command_unit_of_work,
    console,
    domain_message,
    fail,
    resolve_merchant,
)
from tally.errors import DomainError
from tally.program import document
from tally.program.config_service import load_program, program_history, update_program

program_app = typer.Typer(help="Show, change and trace the loyalty program as code.")


@program_app.command("show")
def program_show(merchant: MerchantOption = None) -> None:
    """Print the program as YAML (the same document as GET /api/v1/program)."""
    with command_unit_of_work() as session:
        _, settings = load_program(session, resolve_merchant(session, merchant))
    # Plain print: the output is a file to keep, not text to style.
    typer.echo(document.render(settings), nl=False)


@program_app.command("apply")
def program_apply(
    file: Annotated[Path, typer.Argument(help="A YAML file as `tally program show` prints it.")],
    merchant: MerchantOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only check the file and show the changes.")
    ] = False,
) -> None:
    """Check a program file, show what it changes, and save it as a new version.

    A file that names the version it came from (as `show` writes it) is refused when the
    program has changed since, so an old copy cannot undo someone else's change.
    """
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {file}: {exc}")
    try:
        wanted = document.read(text, str(file))
    except DomainError as exc:
        fail(domain_message(exc))
    with command_unit_of_work() as session:
        merchant_id = resolve_merchant(session, merchant)
        _, current = load_program(session, merchant_id)
        found = document.changes(current, wanted.settings)
        if not found:
            console.print(f"nothing to change: {file} is the program at version {current.version}")
            return
        for change in found:
            console.print(escape(change.describe()), highlight=False)
        if dry_run:
            console.print(f"{len(found)} changes; dry run, nothing saved")
            return
        sections = wanted.settings.model_dump(mode="json", exclude={"version"})
        updated = update_program(
            session,
            merchant_id=merchant_id,
            changes=sections,
            expected_version=wanted.based_on,
            changed_by=cli_actor(),
        )
    console.print(f"{len(found)} changes saved as version {updated.version}")


@program_app.command("history")
def program_history_command(merchant: MerchantOption = None) -> None:
    """List the saved versions of the program, newest first, and who saved each."""
    with command_unit_of_work() as session:
        merchant_id = resolve_merchant(session, merchant)
        _, current = load_program(session, merchant_id)
        versions = program_history(session, merchant_id)
        table = Table("version", "saved at (UTC)", "by")
        for version in versions:
            table.add_row(
                str(version.version),
                version.changed_at.strftime("%Y-%m-%d %H:%M:%S"),
                escape(version.changed_by),
            )
        if not any(v.version == current.version for v in versions):
            table.add_row(str(current.version), "-", "(the first settings, before history)")
    console.print(table)
