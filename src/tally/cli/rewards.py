"""`tally rewards`: the rewards' coupon code pools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tally.cli.support import MerchantOption, command_unit_of_work, console, fail, resolve_merchant
from tally.errors import DomainError
from tally.program import redemptions
from tally.program.rewards import MAX_POOL_FILE_BYTES, pool_lines

rewards_app = typer.Typer(help="The program's rewards and their coupon code pools.")
codes_app = typer.Typer(help="Coupon codes uploaded for a reward, handed out one per redemption.")
rewards_app.add_typer(codes_app, name="codes")


def _refusal(error: DomainError) -> str:
    # Every problem with its row and the code, so the file can be corrected in one go.
    lines = [error.detail]
    for problem in error.errors:
        value = "" if problem.value is None else f": {problem.value}"
        lines.append(f"  - {problem.field}: {problem.message}{value}")
    return "\n".join(lines)


@codes_app.command("upload")
def upload_codes(
    reward: Annotated[str, typer.Argument(help="The reward's id (see `tally program show`).")],
    file: Annotated[Path, typer.Argument(help="A file of codes, one per line (CSV or text).")],
    merchant: MerchantOption = None,
) -> None:
    """Add a file's codes to a reward's pool; a file with any bad row adds nothing."""
    try:
        with file.open("rb") as handle:
            content = handle.read(MAX_POOL_FILE_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read {file}: {exc}")
    with command_unit_of_work() as session:
        merchant_id = resolve_merchant(session, merchant)
        try:
            result = redemptions.upload_code_pool(
                session, merchant_id=merchant_id, reward_id=reward, lines=pool_lines(content)
            )
        except DomainError as exc:
            # Exits inside the unit of work, which rolls back: nothing of the file is stored.
            fail(_refusal(exc))
        pool = redemptions.pool_status(session, merchant_id=merchant_id)[reward]
    console.print(
        f"{result.added} codes added, {result.skipped_existing} already in the pool; "
        f"{pool.available} of {pool.total} left for {escape(reward)}",
        highlight=False,
    )
