"""`tally mail preview` and `tally mail list`, run in-process against the test database."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tally.cli import main as cli
from tally.cli.notifications import mail_app
from tally.config import Settings
from tally.db.engine import unit_of_work
from tally.notifications import service
from tally.notifications.handlers import register
from tally.notifications.orm import EmailMessage
from tally.notifications.transport import find_stored
from tally.outbox.registry import Registry
from tally.outbox.worker import Worker
from tests.support.factories import make_customer, make_merchant

runner = CliRunner()


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Point the CLI's own Settings() at the test database and directories."""
    monkeypatch.setenv("TALLY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TALLY_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("TALLY_ENVIRONMENT", "test")
    monkeypatch.setenv("TALLY_PUBLIC_BASE_URL", settings.public_base_url)
    monkeypatch.delenv("TALLY_SMTP_HOST", raising=False)
    # Wide enough that Rich does not wrap file paths in the table.
    monkeypatch.setattr(cli.console, "_width", 400)
    return settings


def test_preview_prints_subject_and_text_and_writes_html(
    cli_env: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory, "Harbour Books")
    make_customer(session_factory, m.id, email="ada@example.com", first_name="Ada", points=40)
    out = tmp_path / "preview" / "points.html"
    result = runner.invoke(
        mail_app,
        ["preview", "points_earned", "--customer", "ADA@example.com", "--html-out", str(out)],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Subject: You earned 150 points at Harbour Books"
    assert lines[1] == ""
    assert lines[2] == "Hi Ada,"
    assert "bringing your balance to 40 points." in result.output
    assert lines[-1] == f"HTML part written to {out}"
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert "Hi Ada," in html


def test_preview_refuses_unknown_customer_type_and_merchant(
    cli_env: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    a, b = make_merchant(session_factory), make_merchant(session_factory)
    make_customer(session_factory, b.id, email="bea@example.com")
    out = tmp_path / "never.html"
    cases = [
        (["preview", "points_earned", "-c", "bea@example.com", "-m", str(a.id)], "no customer"),
        (["preview", "birthday", "-c", "bea@example.com", "-m", str(b.id)], "no email type"),
        (["preview", "points_earned", "-c", "bea@example.com"], "several merchants"),
        (["preview", "points_earned", "-c", "bea@example.com", "-m", "999999"], "does not exist"),
    ]
    for args, message in cases:
        result = runner.invoke(mail_app, [*args, "--html-out", str(out)])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output
    assert not out.exists()


def test_list_shows_the_log_and_the_eml_files(
    cli_env: Settings, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id, email="ada@example.com")
    gone = make_customer(session_factory, m.id, email="bob@example.com")
    registry = Registry()
    register(registry)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        service.unsubscribe(session, merchant_id=m.id, customer_id=gone)
        for key, customer in (("order:1", cid), ("order:2", gone)):
            service.queue_email(
                session,
                merchant_id=m.id,
                customer_id=customer,
                email_type="points_earned",
                variables={"points": 5},
                dedupe_key=key,
                registry=registry,
            )
    Worker(settings=cli_env, session_factory=session_factory, registry=registry).drain()
    with session_factory() as session:
        sent = session.query(EmailMessage).filter_by(dedupe_key="order:1").one()
    assert sent.message_id is not None
    path = find_stored(cli_env.mail_dir, sent.message_id)
    assert path is not None

    result = runner.invoke(mail_app, ["list"])
    assert result.exit_code == 0, result.output
    assert "mail log (2 of 2)" in result.output
    sent_line = next(line for line in result.output.splitlines() if "ada@example.com" in line)
    assert "sent" in sent_line
    assert "You earned 5 points" in sent_line
    assert str(path) in sent_line
    suppressed_line = next(line for line in result.output.splitlines() if "bob@example.com" in line)
    assert "suppressed" in suppressed_line
    assert "the customer unsubscribed" in suppressed_line
    assert f"emails are written as .eml files to {cli_env.mail_dir}" in result.output

    only = runner.invoke(mail_app, ["list", "--status", "suppressed"])
    assert "mail log (1 of 1)" in only.output
    assert "ada@example.com" not in only.output
    bad = runner.invoke(mail_app, ["list", "--status", "lost"])
    assert bad.exit_code == 2
    assert "unknown status 'lost'" in bad.output
