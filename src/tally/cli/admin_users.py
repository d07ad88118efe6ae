"""`tally admin-user`: the people who sign in to a merchant's admin, and their set-password links.

The links are printed, not emailed: whoever runs the command passes them on (the admin's Team
page emails its invitations). Each works once; invitations for 7 days, resets for 1 hour.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tally.cli.support import (
    MerchantOption,
    cli_actor,
    console,
    load_settings,
    resolve_merchant,
)
from tally.cli.support import command_unit_of_work as unit_of_work
from tally.merchants import team

admin_user_app = typer.Typer(
    help="People who sign in to the admin: roles and set-password links.", no_args_is_help=True
)

RoleOption = Annotated[
    str,
    typer.Option(
        "--role", help="owner (everything), manager (program, imports, integrations) or support."
    ),
]


def print_link(link: team.IssuedLink, url: str) -> None:
    """Print a set-password link and how long it works."""
    kind = (
        "sign-in (set-password) link" if link.purpose is team.LinkPurpose.INVITE else "reset link"
    )
    console.print(f"{kind} for {link.email}, valid until {link.expires_at:%Y-%m-%d %H:%M} UTC:")
    # Printed on its own, unwrapped, so it can be copied whole.
    console.print(url, soft_wrap=True, highlight=False, markup=False)
    console.print("[dim]It works once; pass it on to that person only.[/]")


@admin_user_app.command("add")
def add(email: str, role: RoleOption = "support", merchant: MerchantOption = None) -> None:
    """Add someone to a merchant's team and print their sign-in link (valid 7 days)."""
    settings = load_settings()
    with unit_of_work(settings) as session:
        merchant_id = resolve_merchant(session, merchant)
        link = team.invite_member(
            session,
            settings=settings,
            merchant_id=merchant_id,
            email=email,
            role=role,
            actor=cli_actor(),
        )
    print_link(link, link.url(settings))


@admin_user_app.command("list")
def list_users(merchant: MerchantOption = None) -> None:
    """List a merchant's team: email, role, last sign-in, invited or active."""
    with unit_of_work() as session:
        merchant_id = resolve_merchant(session, merchant)
        members = team.list_members(session, merchant_id=merchant_id)
        table = Table("id", "email", "role", "state", "last sign-in")
        for member in members:
            table.add_row(
                str(member.id),
                member.email,
                member.role,
                "invited" if team.is_invited(member) else "active",
                member.last_login_at.isoformat(timespec="seconds") if member.last_login_at else "-",
            )
    console.print(table)


@admin_user_app.command("remove")
def remove(email: str) -> None:
    """Remove an admin user (their sessions end at once); never a merchant's last owner."""
    with unit_of_work() as session:
        user = team.find_member_by_email(session, email)
        removed = team.remove_member(
            session, merchant_id=user.merchant_id, user_id=user.id, actor=cli_actor()
        )
    console.print(f"removed {removed}")


@admin_user_app.command("reset-password")
def reset_password(email: str) -> None:
    """Print a link that lets an admin user choose a new password (valid 1 hour)."""
    settings = load_settings()
    with unit_of_work(settings) as session:
        link = team.reset_link(session, settings=settings, email=email, actor=cli_actor())
    print_link(link, link.url(settings))
