"""`tally program show | apply | history`: the program as a YAML file, saved as versions."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from tally.cli import main as cli
from tally.config import Settings
from tally.db.engine import unit_of_work
from tally.demo import DEMO_PROGRAM
from tally.merchants.orm import ApiKey
from tally.program.config_service import load_program, update_program
from tally.program.orm import ProgramVersion
from tests.support.factories import make_merchant

runner = CliRunner()


@pytest.fixture
def tally(settings: Settings, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TALLY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TALLY_ENVIRONMENT", "test")
    monkeypatch.setattr(cli.console, "_width", 300)
    monkeypatch.setattr(cli.err_console, "_width", 300)

    def run(*args: str) -> Result:
        return runner.invoke(cli.app, list(args))

    return run


@pytest.fixture
def merchant_id(session_factory: sessionmaker[Session]) -> int:
    merchant = make_merchant(session_factory)
    with unit_of_work(session_factory) as session:
        update_program(
            session, merchant_id=merchant.id, changes=DEMO_PROGRAM, changed_by="seed@example.com"
        )
    return merchant.id


def _versions(session_factory: sessionmaker[Session], merchant_id: int) -> list[tuple[int, str]]:
    with session_factory() as session:
        return [
            (v.version, v.changed_by)
            for v in session.scalars(
                select(ProgramVersion)
                .where(ProgramVersion.merchant_id == merchant_id)
                .order_by(ProgramVersion.version)
            )
        ]


def test_show_then_apply_is_a_no_op(
    tally, merchant_id: int, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    shown = tally("program", "show", "--merchant", str(merchant_id))
    assert shown.exit_code == 0, shown.output
    assert "rewards:" in shown.output
    assert "points_cost: 500" in shown.output
    path = tmp_path / "program.yaml"
    path.write_text(shown.output, encoding="utf-8")
    before = _versions(session_factory, merchant_id)

    applied = tally("program", "apply", str(path), "--merchant", str(merchant_id))

    assert applied.exit_code == 0, applied.output
    assert "nothing to change" in applied.output
    assert _versions(session_factory, merchant_id) == before


def test_apply_names_every_change_and_saves_one_version(
    tally, merchant_id: int, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    text = tally("program", "show", "--merchant", str(merchant_id)).output
    edited = (
        text.replace("points_cost: 500", "points_cost: 650")
        .replace("multiplier: '1.5'", "multiplier: 2")
        # The demo program has custom actions of its own; the new one goes first.
        .replace(
            "custom_actions:\n", "custom_actions:\n- {id: follow, name: Follow us, points: 40}\n"
        )
        .replace("  points: 200\n", "  points: 250\n", 1)
    )
    path = tmp_path / "program.yaml"
    path.write_text(edited, encoding="utf-8")

    dry = tally("program", "apply", str(path), "--dry-run", "--merchant", str(merchant_id))
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.output
    assert len(_versions(session_factory, merchant_id)) == 1

    applied = tally("program", "apply", str(path), "--merchant", str(merchant_id))
    assert applied.exit_code == 0, applied.output
    for line in (
        "~ rewards[five-off].points_cost: 500 -> 650",
        "~ vip.tiers[gold].multiplier: '1.5' -> '2'",
        "+ custom_actions[follow]:",
        "~ birthday.points: 200 -> 250",
    ):
        assert line in applied.output
    assert "4 changes saved as version 3" in applied.output
    with session_factory() as session:
        _, settings = load_program(session, merchant_id)
    assert settings.version == 3
    assert settings.rewards[0].points_cost == 650
    assert [a.id for a in settings.custom_actions] == ["follow", "follow-us"]
    versions = _versions(session_factory, merchant_id)
    assert versions[-1][0] == 3
    assert versions[-1][1].startswith("cli (")

    history = tally("program", "history", "--merchant", str(merchant_id))
    assert history.exit_code == 0, history.output
    assert "seed@example.com" in history.output
    assert history.output.index(" 3 ") < history.output.index(" 2 ")


def test_an_invalid_file_is_refused_with_the_field_path_and_changes_nothing(
    tally, merchant_id: int, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    text = tally("program", "show", "--merchant", str(merchant_id)).output
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace("points_cost: 300", "points_cost: -3"), encoding="utf-8")

    refused = tally("program", "apply", str(path), "--merchant", str(merchant_id))

    assert refused.exit_code == 2
    assert "is not a valid program" in refused.output
    assert "rewards[1]" in refused.output
    assert "points_cost" in refused.output
    assert "greater than or equal to 1" in refused.output
    assert len(_versions(session_factory, merchant_id)) == 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("rewards: [\n", "line 2"),
        ("- just a list\n", "expected a mapping"),
        ("loyalty: {}\n", "loyalty: not a settings section"),
        ("version: two\n", "version: expected the whole number"),
    ],
)
def test_a_file_that_is_not_a_program_is_refused_clearly(
    tally, merchant_id: int, tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(content, encoding="utf-8")
    refused = tally("program", "apply", str(path), "--merchant", str(merchant_id))
    assert refused.exit_code == 2
    assert expected in refused.output


def test_a_file_from_an_older_version_cannot_undo_a_later_change(
    tally, merchant_id: int, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    path = tmp_path / "program.yaml"
    path.write_text(tally("program", "show", "--merchant", str(merchant_id)).output)
    with unit_of_work(session_factory) as session:
        update_program(
            session,
            merchant_id=merchant_id,
            changes={"birthday": {"enabled": False}},
            changed_by="someone else",
        )
    path.write_text(path.read_text().replace("points_cost: 500", "points_cost: 501"))

    refused = tally("program", "apply", str(path), "--merchant", str(merchant_id))

    assert refused.exit_code == 2
    assert "at version 3, not 2" in refused.output
    with session_factory() as session:
        _, settings = load_program(session, merchant_id)
    assert settings.birthday.enabled is False
    assert settings.rewards[0].points_cost == 500


def test_api_changes_are_kept_with_the_key_that_made_them(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    merchant = make_merchant(session_factory)
    response = client.patch(
        "/api/v1/program",
        headers=merchant.headers,
        json={"birthday": {"enabled": True, "points": 75}},
    )
    assert response.status_code == 200, response.text
    with session_factory() as session:
        key_id = session.scalar(select(ApiKey.id).where(ApiKey.merchant_id == merchant.id))
    versions = _versions(session_factory, merchant.id)
    assert versions == [(response.json()["version"], f"api-key:{key_id}")]
