"""What every `tally` command shares: consoles, errors, `--merchant`, settings and transactions.

The root app (`tally.cli.main`) and the command groups it mounts (`tally import`, `tally mail`,
...) all import from here, so none of them has to import the root app back.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.audit.actor import Actor
from tally.config import Settings
from tally.db import engine
from tally.errors import DomainError

console = Console()
err_console = Console(stderr=True)

MerchantOption = Annotated[
    int | None,
    typer.Option("--merchant", "-m", help="Merchant id; may be left out when there is only one."),
]


def load_settings() -> Settings:
    """The settings from the environment (and `.env`), read when a command starts."""
    return Settings()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an error and exit (2 = bad input)."""
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def domain_message(error: DomainError) -> str:
    """A refusal as one message: the detail, then one line per field problem."""
    details = "".join(f"\n  - {e.field}: {e.message}" for e in error.errors)
    return f"{error.detail}{details}"


@cache
def _factory_for(database_url: str) -> sessionmaker[Session]:
    return engine.make_session_factory(engine.make_engine(database_url))


def session_factory(settings: Settings) -> sessionmaker[Session]:
    """The session factory for the settings' database: one engine per database and process."""
    return _factory_for(settings.database_url)


@contextmanager
def command_unit_of_work(settings: Settings | None = None) -> Iterator[Session]:
    """One transaction for one command, acting as the user who runs it (for the audit log);
    domain errors become exit code 2 with the message."""
    factory = session_factory(settings or load_settings())
    try:
        with engine.unit_of_work(factory, actor=cli_audit_actor()) as session:
            yield session
    except DomainError as exc:
        fail(domain_message(exc))


def resolve_merchant(session: Session, merchant: int | None) -> int:
    """The merchant id given, or the only merchant there is; binds the session to it."""
    from tally.merchants.orm import Merchant

    if merchant is None:
        ids = list(session.scalars(select(Merchant.id).limit(2)))
        if len(ids) != 1:
            fail(
                "there are no merchants yet: run `tally merchant create`"
                if not ids
                else "there are several merchants: pass --merchant ID (see `tally merchant list`)"
            )
        merchant = ids[0]
    elif session.get(Merchant, merchant) is None:
        fail(f"merchant {merchant} does not exist (see `tally merchant list`)")
    engine.bind_merchant(session, merchant)
    return merchant


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "unknown user"


def cli_actor() -> str:
    """Who is running the command, as the records that keep it name them: `cli (<os user>)`."""
    return f"cli ({_os_user()})"


def cli_audit_actor() -> Actor:
    """Who is running the command, as the audit log names them: `cli:<os user>`."""
    return Actor("cli", _os_user())
