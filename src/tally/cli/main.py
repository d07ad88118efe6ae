"""The `tally` command: thin wrappers that parse, call a service, and print."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import func, select

from tally.cli.support import (
    MerchantOption,
    console,
    err_console,
    fail,
    resolve_merchant,
)
from tally.cli.support import command_unit_of_work as unit_of_work
from tally.cli.support import load_settings as _settings
from tally.config import WorkerMode
from tally.db.engine import make_engine, make_session_factory

app = typer.Typer(help="Tally: loyalty and rewards for online stores.", no_args_is_help=True)
merchant_app = typer.Typer(help="Merchants (stores) and their API keys.", no_args_is_help=True)
customer_app = typer.Typer(help="Look up customers.", no_args_is_help=True)
points_app = typer.Typer(help="Change points balances.", no_args_is_help=True)
ledger_app = typer.Typer(help="Check the points ledger.", no_args_is_help=True)
app.add_typer(merchant_app, name="merchant")
app.add_typer(customer_app, name="customer")
app.add_typer(points_app, name="points")
app.add_typer(ledger_app, name="ledger")


def _add_domain_commands() -> None:
    # The other commands take their helpers from tally.cli.support, never from this module.
    from tally.cli.admin_users import admin_user_app
    from tally.cli.audit import audit_app
    from tally.cli.dotdigital import dotdigital_app
    from tally.cli.imports import import_app
    from tally.cli.notifications import mail_app
    from tally.cli.outbox import outbox_app
    from tally.cli.program import program_app
    from tally.cli.reports import export_app, liability
    from tally.cli.rewards import rewards_app
    from tally.cli.storefront import storefront_app
    from tally.cli.webhooks import webhooks_app

    app.add_typer(mail_app, name="mail")
    app.add_typer(outbox_app, name="outbox")
    app.add_typer(import_app, name="import")
    app.add_typer(program_app, name="program")
    app.add_typer(rewards_app, name="rewards")
    app.add_typer(admin_user_app, name="admin-user")
    app.add_typer(webhooks_app, name="webhooks")
    app.add_typer(storefront_app, name="storefront")
    app.add_typer(export_app, name="export")
    points_app.command("liability")(liability)
    app.add_typer(audit_app, name="audit")
    integrations_app = typer.Typer(help="Connections to other tools.", no_args_is_help=True)
    integrations_app.add_typer(dotdigital_app, name="dotdigital")
    app.add_typer(integrations_app, name="integrations")
    dev_app = typer.Typer(help="Tools for trying Tally locally.", no_args_is_help=True)
    dev_app.command("dotdigital-emulator")(_dotdigital_emulator)
    app.add_typer(dev_app, name="dev")


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    from tally.db import migrate as migrations

    settings = _settings()
    migrations.upgrade(make_engine(settings.database_url))
    console.print(f"database at [bold]{_redact(settings.database_url)}[/] is up to date")


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[int, typer.Option(help="Web processes (PostgreSQL only).")] = 1,
) -> None:
    """Run the web server (API, admin) and, in the embedded mode, the worker in-process."""
    import uvicorn

    settings = _settings()
    try:
        settings.check_for_start()
    except RuntimeError as exc:
        fail(str(exc))
    if workers > 1 and (settings.is_sqlite or settings.worker_mode == WorkerMode.INPROCESS):
        fail("several web processes need PostgreSQL and TALLY_WORKER_MODE=separate")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    trusted_proxies = settings.trusted_proxies.split(",") if settings.trusted_proxies else []
    uvicorn.run(
        "tally.api.asgi:app",
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level="info",
        access_log=False,
        # X-Forwarded-* only from the configured proxies. uvicorn's default believes any
        # 127.0.0.1 peer, so anything local (or a proxy passing the header on) could choose
        # the client address that the admin's login limit counts.
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=trusted_proxies or None,
    )


@app.command()
def worker(
    once: Annotated[bool, typer.Option(help="Process what is due, then exit.")] = False,
) -> None:
    """Run a worker process: outbox deliveries and scheduled jobs."""
    from tally.outbox.registry import load_plugins
    from tally.outbox.worker import Worker

    settings = _settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    load_plugins(settings)
    runner = Worker(
        settings=settings, session_factory=make_session_factory(make_engine(settings.database_url))
    )
    if once:
        stats = runner.drain()
        console.print(
            f"claimed {stats.claimed}, done {stats.done}, retried {stats.retried}, "
            f"failed {stats.failed}, jobs {stats.jobs_run}"
        )
        return
    import signal

    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    try:
        runner.run_forever()
    except KeyboardInterrupt:
        runner.stop()


@app.command()
def demo() -> None:
    """Seed the demo store (once) and print its admin URL and a fresh API key."""
    from tally.demo import seed_demo

    settings = _settings()
    with unit_of_work(settings) as session:
        store = seed_demo(session, settings)
    console.print(
        f"[bold green]Demo store[/] (merchant {store.merchant_id})"
        + (" created" if store.created else " ready")
    )
    console.print(f"  Admin:    {settings.public_base_url}/admin")
    console.print(f"  Login:    {store.admin_email} / {store.admin_password}")
    console.print(f"  API docs: {settings.public_base_url}/docs")
    console.print(f"  API key:  {store.api_key}")
    if store.widget_id:
        console.print(
            f"  Widget:   {store.widget_id} (secret: tally storefront show --reveal-secret)"
        )


@merchant_app.command("create")
def merchant_create(
    name: str,
    store_url: Annotated[str, typer.Option("--store-url", help="The store's web address.")],
    currency: Annotated[str, typer.Option(help="ISO 4217 currency code.")] = "USD",
    timezone: Annotated[str, typer.Option(help="IANA time zone, e.g. Europe/London.")] = "UTC",
    owner_email: Annotated[
        str | None,
        typer.Option(help="The owner's email: adds them and prints their sign-in link."),
    ] = None,
) -> None:
    """Create a merchant and print its id and first API key (shown only this once)."""
    from tally.cli.admin_users import print_link
    from tally.cli.support import cli_actor
    from tally.merchants import service as merchants
    from tally.merchants import team
    from tally.program.starting import start_program

    settings = _settings()
    link = None
    with unit_of_work(settings) as session:
        merchant = merchants.create_merchant(
            session, name=name, store_url=store_url, currency=currency, timezone=timezone
        )
        # A clear, working program to start from, not live until the merchant says so.
        start_program(session, merchant_id=merchant.id, by=cli_actor())
        key = merchants.create_api_key(session, merchant_id=merchant.id)
        if owner_email is not None:
            link = team.invite_member(
                session,
                settings=settings,
                merchant_id=merchant.id,
                email=owner_email,
                role=team.Role.OWNER,
                actor=cli_actor(),
            )
    console.print(f"merchant id: {merchant.id}")
    console.print(f"API key:     {key.secret}")
    console.print("[dim]The key is shown only once; store it somewhere safe.[/]")
    console.print(
        "The store starts with 100 points for an account, 1 point per unit spent and one "
        "reward, [bold]not live[/]: review it and go live on the admin's dashboard."
    )
    if link is not None:
        print_link(link, link.url(settings))


@merchant_app.command("list")
def merchant_list() -> None:
    """List merchants with their customer counts."""
    from tally.customers.orm import Customer
    from tally.merchants.orm import Merchant

    with unit_of_work() as session:
        counts = dict(
            session.execute(
                select(Customer.merchant_id, func.count()).group_by(Customer.merchant_id)
            ).all()
        )
        table = Table("id", "name", "store URL", "currency", "timezone", "customers")
        for m in session.scalars(select(Merchant).order_by(Merchant.id)):
            table.add_row(
                str(m.id), m.name, m.store_url, m.currency, m.timezone, str(counts.get(m.id, 0))
            )
    console.print(table)


@customer_app.command("show")
def customer_show(email: str, merchant: MerchantOption = None) -> None:
    """Show a customer's profile, balance and latest ledger entries."""
    from tally.customers import service as customers
    from tally.ledger import service as ledger

    with unit_of_work() as session:
        merchant_id = resolve_merchant(session, merchant)
        customer = customers.get_customer_by_email(session, merchant_id, email)
        entries, total = ledger.list_entries(session, customer_id=customer.id, limit=10)
        console.print(f"[bold]{customer.full_name or customer.email}[/] <{customer.email}>")
        console.print(
            f"  id {customer.id}, {customer.state}, referral code {customer.referral_code}"
        )
        console.print(
            f"  birthday: {customer.birthday or '-'}   VIP tier: {customer.vip_tier or '-'}"
        )
        console.print(f"  balance: [bold]{customer.points_balance}[/] points")
        table = Table("id", "when", "points", "kind", "reason", title=f"ledger ({total} entries)")
        for e in entries:
            table.add_row(
                str(e.id),
                e.created_at.isoformat(timespec="seconds"),
                f"{e.points:+d}",
                e.kind,
                e.reason,
            )
        console.print(table)


@points_app.command("adjust", context_settings={"ignore_unknown_options": True})
def points_adjust(
    email: str,
    points: Annotated[int, typer.Argument(help="Positive to add, negative to remove.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the ledger).")],
    merchant: MerchantOption = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Run the same adjustment at most once per key.")
    ] = None,
) -> None:
    """Add or remove points by hand."""
    import uuid

    from tally.customers import service as customers
    from tally.ledger import service as ledger

    with unit_of_work() as session:
        merchant_id = resolve_merchant(session, merchant)
        customer = customers.get_customer_by_email(session, merchant_id, email)
        posting = ledger.adjust(
            session,
            customer=customer,
            points=points,
            reason=reason,
            idempotency_key=f"cli:{idempotency_key or uuid.uuid4().hex}",
            source_ref="cli",
        )
        balance = customer.points_balance
    note = " (already applied earlier; nothing changed)" if posting.replayed else ""
    console.print(f"{customer.email}: {posting.entry.points:+d} points, balance {balance}{note}")


@ledger_app.command("verify")
def ledger_verify(merchant: MerchantOption = None) -> None:
    """Recompute every balance from the ledger and check the order rules (exit 1 on a problem)."""
    from tally.customers.orm import Customer
    from tally.ledger import service as ledger
    from tally.program.integrity import order_violations

    with unit_of_work() as session:
        count = select(func.count(Customer.id))
        if merchant is not None:
            count = count.where(Customer.merchant_id == merchant)
        checked = session.scalar(count) or 0
        corrupt = list(ledger.find_corrupt_customers(session, merchant_id=merchant))
        mismatches = list(ledger.verify_balances(session, merchant_id=merchant))
        violations = order_violations(session, merchant_id=merchant)
    if not (corrupt or mismatches or violations):
        console.print(
            f"[green]ok[/]: {checked} balances equal the sum of their ledger entries, "
            "and no order was refunded or clawed back beyond what it paid or earned"
        )
        return
    if mismatches:
        table = Table("merchant", "customer", "email", "cached", "ledger sum", "difference")
        for m in mismatches:
            table.add_row(
                str(m.merchant_id),
                str(m.customer_id),
                m.email,
                str(m.cached),
                str(m.computed),
                f"{m.cached - m.computed:+d}",
            )
        console.print(table)
        err_console.print(
            f"[bold red]{len(mismatches)} of {checked} balances do not match the ledger[/]"
        )
    if corrupt:
        table = Table("merchant", "customer", "email", "problem", title="Corrupt points")
        for c in corrupt:
            table.add_row(str(c.merchant_id), str(c.customer_id), c.email, c.detail)
        console.print(table)
        err_console.print(f"[bold red]{len(corrupt)} customers have corrupt points[/]")
    if violations:
        table = Table("merchant", "order", "problem", title="Orders breaking a money rule")
        for v in violations:
            table.add_row(str(v.merchant_id), v.order_id, v.detail)
        console.print(table)
        err_console.print(f"[bold red]{len(violations)} order problems[/]")
    raise typer.Exit(1)


def _dotdigital_emulator(
    port: Annotated[
        int, typer.Option(help="Port of region 1; regions 2 and 3 listen on the next two.")
    ] = 8078,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    latency_ms: Annotated[int, typer.Option(help="Delay added to every call.")] = 0,
    error_rate: Annotated[float, typer.Option(help="Share of calls answered 500/503.")] = 0.0,
    timeout_rate: Annotated[float, typer.Option(help="Share of calls that hang.")] = 0.0,
    hang_seconds: Annotated[float, typer.Option(help="How long a hanging call hangs.")] = 5.0,
    burst_429: Annotated[int, typer.Option(help="Answer 429 to the next N calls.")] = 0,
    rate_limit: Annotated[int, typer.Option(help="Calls per minute per API user (0: none).")] = 0,
    import_delay: Annotated[float, typer.Option(help="Seconds a bulk import stays busy.")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Seed for the fault injection.")] = None,
    account: Annotated[
        list[str] | None, typer.Option(help="An API user as user:password[:region] (repeatable).")
    ] = None,
) -> None:
    """Run a local Dotdigital API emulator (Basic auth, data fields, contacts, bulk imports)."""
    from tally.devtools.dotdigital_emulator import config_from_options
    from tally.devtools.dotdigital_emulator import serve as serve_emulator

    serve_emulator(
        host,
        port,
        config_from_options(
            latency_ms=latency_ms,
            error_rate=error_rate,
            timeout_rate=timeout_rate,
            hang_seconds=hang_seconds,
            burst_429=burst_429,
            rate_limit=rate_limit,
            import_delay=import_delay,
            seed=seed,
            accounts=account or (),
        ),
    )


_add_domain_commands()


def main() -> None:  # pragma: no cover - console entry point
    """Run the CLI."""
    sys.exit(app())
