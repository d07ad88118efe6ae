"""The dependency rules of docs/architecture.md, checked on the source so a change can fail them."""

from __future__ import annotations

import ast
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
