"""`tally storefront`: the widget's public id, its signing secret and the store origins."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from tally.cli.support import (
    MerchantOption,
    command_unit_of_work,
    console,
    load_settings,
    resolve_merchant,
)
from tally.storefront import service

storefront_app = typer.Typer(
    help="The storefront widget: its id, signing secret and allowed store origins.",
    no_args_is_help=True,
)
origins_app = typer.Typer(help="The store origins the widget may be called from.")
storefront_app.add_typer(origins_app, name="origins")


def _print_secret(secret: str) -> None:
    console.print("signing secret: ", Text(secret), sep="")
    console.print("[dim]Put it in the store's theme settings or backend; never in a page.[/]")


@storefront_app.command("show")
def show(
    reveal_secret: Annotated[
        bool, typer.Option("--reveal-secret", help="Also print the signing secret.")
    ] = False,
    merchant: MerchantOption = None,
) -> None:
    """Print the widget id, hosted page, origins and whether the storefront is on."""
    settings = load_settings()
    with command_unit_of_work(settings) as session:
        merchant_id = resolve_merchant(session, merchant)
        row = service.settings_for(session, config=settings, merchant_id=merchant_id)
        secret = service.reveal_secret(settings, row) if reveal_secret else None
        widget_id, origins, enabled = row.widget_id, list(row.allowed_origins), row.enabled
        rotated = row.previous_secret_expires_at
    console.print(f"widget id: {widget_id}")
    console.print(f"enabled: {'yes' if enabled else 'no'}")
    console.print(f"API: {settings.public_base_url}/storefront/v1/{widget_id}")
    console.print(f"hosted page: {settings.public_base_url}/p/{widget_id}")
    console.print("allowed origins: ", Text(", ".join(origins) or "(none)"), sep="")
    if rotated is not None:
        console.print(f"previous secret verifies until: {rotated.isoformat(timespec='seconds')}")
    if secret is not None:
        _print_secret(secret)


@storefront_app.command("rotate-secret")
def rotate_secret(merchant: MerchantOption = None) -> None:
    """Issue a new signing secret; the old one still verifies for 24 hours."""
    settings = load_settings()
    with command_unit_of_work(settings) as session:
        merchant_id = resolve_merchant(session, merchant)
        secret = service.rotate_secret(session, config=settings, merchant_id=merchant_id)
    console.print("The previous secret still verifies for 24 hours.")
    _print_secret(secret)


@origins_app.command("set")
def set_origins(
    origins: Annotated[
        list[str], typer.Argument(help="Origins such as https://shop.example.com (no path).")
    ],
    merchant: MerchantOption = None,
) -> None:
    """Replace the allowed store origins (Tally's own public URL is always allowed)."""
    settings = load_settings()
    with command_unit_of_work(settings) as session:
        merchant_id = resolve_merchant(session, merchant)
        saved = service.set_origins(
            session, config=settings, merchant_id=merchant_id, origins=origins
        )
    console.print("allowed origins: ", Text(", ".join(saved)), sep="")
