"""The team service and `tally admin-user`: invitations, set-password links, roles, owners."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tally.cli import main as cli
from tally.cli.main import app
from tally.config import Settings
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.errors import Conflict, NotFound, ValidationFailed
from tally.merchants import service as merchants
from tally.merchants import team
from tally.merchants.orm import AdminUser
from tally.outbox.orm import OutboxMessage
from tests.support.factories import make_merchant

NEW_PASSWORD = "a much longer secret"
runner = CliRunner()


def invite(
    factory: sessionmaker[Session],
    settings: Settings,
    merchant_id: int,
    email: str,
    role: str = "support",
) -> team.IssuedLink:
    with unit_of_work(factory) as session:
        return team.invite_member(
            session,
            settings=settings,
            merchant_id=merchant_id,
            email=email,
            role=role,
            actor="test",
        )


def set_password(
    factory: sessionmaker[Session], settings: Settings, token: str, password: str = NEW_PASSWORD
) -> AdminUser:
    with unit_of_work(factory) as session:
        return team.set_password(
            session, settings=settings, token=token, password=password, confirmation=password
        )


def user_row(factory: sessionmaker[Session], email: str) -> AdminUser:
    with factory() as session:
        user = session.scalars(select(AdminUser).where(AdminUser.email == email)).one()
        session.expunge(user)
        return user


def can_sign_in(factory: sessionmaker[Session], email: str, password: str) -> bool:
    with unit_of_work(factory) as session:
        return merchants.authenticate_admin(session, email=email, password=password) is not None


# --------------------------------------------------------------------------- links


def test_an_invited_member_cannot_sign_in_until_the_link_sets_a_password(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant = make_merchant(session_factory)
    link = invite(session_factory, settings, merchant.id, " Sam@Shop.Example ", "support")

    invited = user_row(session_factory, "sam@shop.example")
    assert (invited.role, team.is_invited(invited)) == ("support", True)
    assert link.purpose is team.LinkPurpose.INVITE
    assert link.expires_at - utcnow() > timedelta(days=6, hours=23)
    assert link.url(settings) == f"http://tally.test/admin/set-password?token={link.token}"
    assert not can_sign_in(session_factory, "sam@shop.example", "")
    assert not can_sign_in(session_factory, "sam@shop.example", invited.password_hash)

    user = set_password(session_factory, settings, link.token)

    assert (user.email, team.is_invited(user_row(session_factory, user.email))) == (
        "sam@shop.example",
        False,
    )
    assert can_sign_in(session_factory, "sam@shop.example", NEW_PASSWORD)


def test_a_link_works_once(session_factory: sessionmaker[Session], settings: Settings) -> None:
    merchant = make_merchant(session_factory)
    link = invite(session_factory, settings, merchant.id, "sam@shop.example")
    set_password(session_factory, settings, link.token)
    before = user_row(session_factory, "sam@shop.example").password_hash

    with pytest.raises(team.InvalidPasswordLink):
        set_password(session_factory, settings, link.token, "another long password")

    assert user_row(session_factory, "sam@shop.example").password_hash == before
    assert can_sign_in(session_factory, "sam@shop.example", NEW_PASSWORD)


def test_a_reset_link_expires_after_an_hour_and_an_invitation_after_a_week(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant = make_merchant(session_factory)
    invite(session_factory, settings, merchant.id, "sam@shop.example")
    with unit_of_work(session_factory) as session:
        user = session.scalars(select(AdminUser)).one()
        stale_reset = team.issue_link(
            settings, user, team.LinkPurpose.RESET, now=utcnow() - timedelta(minutes=61)
        )
        fresh_reset = team.issue_link(
            settings, user, team.LinkPurpose.RESET, now=utcnow() - timedelta(minutes=59)
        )
        stale_invite = team.issue_link(
            settings, user, team.LinkPurpose.INVITE, now=utcnow() - timedelta(days=7, minutes=1)
        )
        fresh_invite = team.issue_link(
            settings, user, team.LinkPurpose.INVITE, now=utcnow() - timedelta(days=6, hours=23)
        )
    with session_factory() as session:
        for stale in (stale_reset, stale_invite):
            with pytest.raises(team.InvalidPasswordLink, match="expired"):
                team.check_link(session, settings=settings, token=stale.token)
        for fresh in (fresh_reset, fresh_invite):
            assert team.check_link(session, settings=settings, token=fresh.token).id == user.id
    assert team.is_invited(user_row(session_factory, "sam@shop.example"))


def test_a_tampered_or_foreign_link_is_refused(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant = make_merchant(session_factory)
    sam = invite(session_factory, settings, merchant.id, "sam@shop.example")
    kim = invite(session_factory, settings, merchant.id, "kim@shop.example")
    claims = jwt.decode(sam.token, options={"verify_signature": False})
    header, payload, signature = sam.token.split(".")
    kim_payload = kim.token.split(".")[1]
    forged = [
        # Kim's claims under Sam's signature.
        f"{header}.{kim_payload}.{signature}",
        # A flipped signature character.
        f"{header}.{payload}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}{signature[-1]}",
        # Signed with another key, or with none at all.
        jwt.encode(claims, "another secret key that is long enough!", algorithm="HS256"),
        jwt.encode(claims, None, algorithm="none"),
        # Sam's link claiming to be for Kim.
        jwt.encode(
            {**claims, "sub": str(user_row(session_factory, "kim@shop.example").id)}, "k" * 32
        ),
        "",
        "not-a-token",
        sam.token + "x",
    ]
    with session_factory() as session:
        for token in forged:
            with pytest.raises(team.InvalidPasswordLink):
                team.check_link(session, settings=settings, token=token)
        # Another secret key (another installation) does not accept this one's links.
        other = settings.model_copy(update={"secret_key": settings.secret_key.__class__("x" * 40)})
        with pytest.raises(team.InvalidPasswordLink):
            team.check_link(session, settings=other, token=sam.token)
    assert team.is_invited(user_row(session_factory, "sam@shop.example"))
    assert team.is_invited(user_row(session_factory, "kim@shop.example"))


def test_a_renewed_invitation_voids_the_previous_link(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant = make_merchant(session_factory)
    first = invite(session_factory, settings, merchant.id, "sam@shop.example")
    user_id = user_row(session_factory, "sam@shop.example").id
    with unit_of_work(session_factory) as session:
        second = team.renew_invitation(
            session, settings=settings, merchant_id=merchant.id, user_id=user_id, actor="test"
        )

    with pytest.raises(team.InvalidPasswordLink):
        set_password(session_factory, settings, first.token)
    set_password(session_factory, settings, second.token)
    with unit_of_work(session_factory) as session, pytest.raises(Conflict):
        team.renew_invitation(
            session, settings=settings, merchant_id=merchant.id, user_id=user_id, actor="test"
        )


def test_a_short_or_mismatched_password_is_refused_and_the_link_still_works(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant = make_merchant(session_factory)
    link = invite(session_factory, settings, merchant.id, "sam@shop.example")
    with unit_of_work(session_factory) as session, pytest.raises(ValidationFailed) as refused:
        team.set_password(
            session, settings=settings, token=link.token, password="short", confirmation="other"
        )
    assert [p.field for p in refused.value.errors] == ["password", "confirmation"]
    assert team.is_invited(user_row(session_factory, "sam@shop.example"))
    set_password(session_factory, settings, link.token)


def test_a_reset_request_queues_an_email_only_for_an_existing_account(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant = make_merchant(session_factory)
    invite(session_factory, settings, merchant.id, "sam@shop.example")
    for email in ("nobody@shop.example", "not an email", "SAM@shop.example"):
        with unit_of_work(session_factory) as session:
            team.request_password_reset(session, email=email)
    with session_factory() as session:
        messages = list(session.scalars(select(OutboxMessage)))
    assert [(m.event_type, m.payload["purpose"]) for m in messages] == [
        ("PasswordLinkRequested", "reset")
    ]
    # Ids only: the link is minted when the email is sent, never stored.
    assert set(messages[0].payload) == {"merchant_id", "user_id", "purpose"}


# --------------------------------------------------------------------------- roles and owners


def test_roles_change_but_the_last_owner_stays(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant = make_merchant(session_factory)
    invite(session_factory, settings, merchant.id, "owner@shop.example", "owner")
    invite(session_factory, settings, merchant.id, "sam@shop.example", "support")
    owner = user_row(session_factory, "owner@shop.example").id
    sam = user_row(session_factory, "sam@shop.example").id

    def change(user_id: int, role: str) -> None:
        with unit_of_work(session_factory) as session:
            team.change_role(
                session, merchant_id=merchant.id, user_id=user_id, role=role, actor="test"
            )

    with pytest.raises(Conflict, match="only owner"):
        change(owner, "manager")
    with pytest.raises(Conflict, match="only owner"), unit_of_work(session_factory) as session:
        team.remove_member(session, merchant_id=merchant.id, user_id=owner, actor="test")
    with pytest.raises(ValidationFailed):
        change(sam, "boss")
    assert user_row(session_factory, "owner@shop.example").role == "owner"
    assert user_row(session_factory, "sam@shop.example").role == "support"

    change(sam, "owner")
    change(owner, "manager")
    assert user_row(session_factory, "owner@shop.example").role == "manager"
    with pytest.raises(Conflict, match="only owner"):
        change(sam, "support")

    with unit_of_work(session_factory) as session:
        team.remove_member(session, merchant_id=merchant.id, user_id=owner, actor="test")
    with session_factory() as session:
        assert list(session.scalars(select(AdminUser.email))) == ["sam@shop.example"]


def test_another_merchants_member_cannot_be_changed_or_removed(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    mine, theirs = make_merchant(session_factory), make_merchant(session_factory)
    invite(session_factory, settings, theirs.id, "them@other.example", "support")
    invite(session_factory, settings, theirs.id, "boss@other.example", "owner")
    them = user_row(session_factory, "them@other.example").id
    with unit_of_work(session_factory) as session, pytest.raises(NotFound):
        team.change_role(session, merchant_id=mine.id, user_id=them, role="owner", actor="t")
    with unit_of_work(session_factory) as session, pytest.raises(NotFound):
        team.remove_member(session, merchant_id=mine.id, user_id=them, actor="t")
    assert user_row(session_factory, "them@other.example").role == "support"


def test_an_email_has_one_admin_account(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    first, second = make_merchant(session_factory), make_merchant(session_factory)
    invite(session_factory, settings, first.id, "sam@shop.example")
    with pytest.raises(Conflict):
        invite(session_factory, settings, second.id, "SAM@shop.example")


def test_existing_admin_users_are_owners(session_factory: sessionmaker[Session]) -> None:
    merchant = make_merchant(session_factory)
    with unit_of_work(session_factory) as session:
        merchants.create_admin_user(
            session, merchant_id=merchant.id, email="old@shop.example", password=NEW_PASSWORD
        )
    assert user_row(session_factory, "old@shop.example").role == "owner"
    assert team.permissions_of("owner") == frozenset(team.Permission)
    assert team.permissions_of("support") == {team.Permission.CUSTOMERS}
    assert team.permissions_of("unknown") == frozenset()


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("TALLY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TALLY_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("TALLY_ENVIRONMENT", "test")
    monkeypatch.setenv("TALLY_PUBLIC_BASE_URL", "https://loyalty.example")
    monkeypatch.setattr(cli.console, "_width", 1000)
    return settings


def link_in(output: str) -> str:
    found = re.search(r"^(https://loyalty\.example/admin/set-password\?token=\S+)$", output, re.M)
    assert found is not None, output
    return found.group(1)


def test_the_cli_creates_a_merchant_with_its_owner_and_manages_the_team(
    cli_env: Settings, session_factory: sessionmaker[Session]
) -> None:
    created = runner.invoke(
        app,
        [
            *("merchant", "create", "Acme", "--store-url", "https://acme.example"),
            *("--owner-email", "Owner@Acme.example"),
        ],
    )
    assert created.exit_code == 0, created.output
    assert "API key:" in created.output
    token = parse_qs(urlsplit(link_in(created.output)).query)["token"][0]
    settings = cli_env.model_copy(update={"public_base_url": "https://loyalty.example"})
    assert set_password(session_factory, settings, token).email == "owner@acme.example"

    added = runner.invoke(app, ["admin-user", "add", "sam@acme.example", "--role", "support"])
    assert added.exit_code == 0, added.output
    link_in(added.output)
    listed = runner.invoke(app, ["admin-user", "list"])
    assert listed.exit_code == 0, listed.output
    rows = [line.split("│")[2:5] for line in listed.output.splitlines() if "@acme" in line]
    assert [[cell.strip() for cell in row] for row in rows] == [
        ["owner@acme.example", "owner", "active"],
        ["sam@acme.example", "support", "invited"],
    ]

    reset = runner.invoke(app, ["admin-user", "reset-password", "owner@acme.example"])
    assert reset.exit_code == 0, reset.output
    assert "reset link for owner@acme.example" in reset.output
    reset_token = parse_qs(urlsplit(link_in(reset.output)).query)["token"][0]
    set_password(session_factory, settings, reset_token, "the owner's new password")
    assert can_sign_in(session_factory, "owner@acme.example", "the owner's new password")

    last_owner = runner.invoke(app, ["admin-user", "remove", "owner@acme.example"])
    assert last_owner.exit_code == 2
    assert "only owner" in last_owner.output
    removed = runner.invoke(app, ["admin-user", "remove", "sam@acme.example"])
    assert removed.exit_code == 0, removed.output
    missing = runner.invoke(app, ["admin-user", "remove", "sam@acme.example"])
    assert missing.exit_code == 2
    with session_factory() as session:
        assert list(session.scalars(select(AdminUser.email))) == ["owner@acme.example"]


def test_merchant_create_without_an_owner_and_with_a_bad_owner_email(
    cli_env: Settings, session_factory: sessionmaker[Session]
) -> None:
    plain = runner.invoke(app, ["merchant", "create", "Plain", "--store-url", "https://p.example"])
    assert plain.exit_code == 0, plain.output
    assert "set-password" not in plain.output
    bad = runner.invoke(
        app,
        ["merchant", "create", "Bad", "--store-url", "https://b.example", "--owner-email", "x"],
    )
    assert bad.exit_code == 2
    listed = runner.invoke(app, ["merchant", "list"])
    assert "Plain" in listed.output
    assert "Bad" not in listed.output
