"""The dependency rules of docs/architecture.md, checked on the source so a change can fail them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "tally"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def test_the_program_tells_notifications_through_events_and_never_calls_them() -> None:
    offenders = {
        str(path.relative_to(SRC)): sorted(m for m in _imports(path) if "notifications" in m)
        for path in _modules("program")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


# Ways to write points that bypass the ledger: SQL text, Core statements on the ORM classes,
# and assignments to the two columns only the ledger may move.
_POINT_WRITES = re.compile(
    r"INSERT\s+INTO\s+ledger_entries|UPDATE\s+ledger_entries|DELETE\s+FROM\s+ledger_entries"
    r"|UPDATE\s+customers\s+SET[^\"']*points_balance"
    r"|insert\(\s*[\"']ledger_entries[\"']"
    r"|(?:insert|update|delete)\(\s*LedgerEntry\b"
    r"|\bLedgerEntry\("
    r"|values\([^)]*points_balance\s*="
    r"|\.points_balance\s*[-+]?=(?!=)"
    r"|\.remaining\s*[-+]?=(?!=)",
    re.IGNORECASE,
)


def test_only_the_ledger_writes_entries_and_balances() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC)
        if relative.parts[0] == "ledger" or "migrations" in relative.parts:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _POINT_WRITES.search(line):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []


def test_the_point_writes_pattern_recognises_each_way_around_the_ledger() -> None:
    # The check above is only as good as its pattern: each of these must be caught.
    for line in (
        'bulk.insert("ledger_entries", COLUMNS, rows)',
        '"UPDATE customers SET points_balance = points_balance + ? WHERE id = ?"',
        "session.execute(insert(LedgerEntry).values(points=5))",
        ".values(points_balance=0)",
        "customer.points_balance += 10",
        "credit.remaining -= taken",
        "session.add(LedgerEntry(points=3))",
    ):
        assert _POINT_WRITES.search(line), line
    assert not _POINT_WRITES.search("if customer.points_balance == 0:")
