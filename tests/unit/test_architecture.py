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


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, counting `from a import b` as `a` and `a.b` (b may be one)."""
    package = ".".join(("tally", *path.relative_to(SRC).parent.parts))
    return _modules_imported_by(path.read_text(encoding="utf-8"), package)


def _modules_imported_by(source: str, package: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def _all_modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


# One package per kind of entry point; the outbox worker (outbox/worker.py) is the fourth.
ENTRY_PACKAGES = ("api", "admin", "cli")
# Packages that hold services, rules and storage only: never a route or a command.
DOMAIN_PACKAGES = (
    "audit",
    "customers",
    "db",
    "idempotency",
    "imports",
    "integrations",
    "ledger",
    "merchants",
    "notifications",
    "outbox",
    "program",
    "reports",
    "storefront",
    "webhooks",
)
# What defining a route or a command takes.
ENTRY_FRAMEWORKS = ("fastapi", "starlette", "typer")


def _entry_point_imports(path: Path) -> list[str]:
    return _entry_points_among(_imported_modules(path))


def _entry_points_among(modules: set[str]) -> list[str]:
    return sorted(
        m
        for m in modules
        if any(_within(m, f"tally.{e}") for e in ENTRY_PACKAGES)
        or any(_within(m, f) for f in ENTRY_FRAMEWORKS)
    )


def test_every_top_level_package_is_an_entry_point_or_a_domain_package() -> None:
    # A new package must be sorted into one list or the other, so the rules below cover it.
    packages = sorted(p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert packages == sorted({*ENTRY_PACKAGES, *DOMAIN_PACKAGES, "devtools"})


def _domain_modules() -> list[Path]:
    # The domain packages and the shared top-level modules (config.py, errors.py, state.py, ...).
    top_level = [p for p in SRC.glob("*.py") if p.name != "__init__.py"]
    return sorted({*top_level, *(p for package in DOMAIN_PACKAGES for p in _modules(package))})


def test_domain_packages_define_no_routes_or_commands() -> None:
    offenders = {
        str(path.relative_to(SRC)): _entry_point_imports(path) for path in _domain_modules()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_domain_module_is_named_like_an_entry_point() -> None:
    # Routes go in api/, pages in admin/, commands in cli/: not in an api.py beside the service.
    entry_names = {"api.py", "cli.py", "routes.py", "admin.py", "views.py", "commands.py"}
    offenders = sorted(str(p.relative_to(SRC)) for p in _domain_modules() if p.name in entry_names)
    assert offenders == []


def test_storage_never_imports_an_entry_point() -> None:
    storage = sorted({*_modules("db"), *SRC.rglob("orm.py")})
    offenders = {str(path.relative_to(SRC)): _entry_point_imports(path) for path in storage}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_entry_point_check_catches_routes_commands_and_entry_imports() -> None:
    # The checks above are only as good as this: each of these lines must be caught.
    for source in (
        "from fastapi import APIRouter",
        "from starlette.requests import Request",
        "import typer",
        "from tally.api.deps import Caller",
        "from tally.cli.support import console",
        "from tally import admin",
        "from ...api import schemas",
    ):
        assert _entry_points_among(_modules_imported_by(source, "tally.customers.sub")), source
    for source in ("import typing", "from tally.customers import service", "from . import orm"):
        assert _entry_points_among(_modules_imported_by(source, "tally.imports")) == [], source


def test_only_the_root_cli_is_imported_by_nobody_but_itself() -> None:
    # The command groups share tally.cli.support; only the package's __init__ (the console
    # script's `tally.cli:app`) imports the root app in cli/main.py.
    offenders = sorted(
        str(path.relative_to(SRC))
        for path in _all_modules()
        if path not in {SRC / "cli" / "main.py", SRC / "cli" / "__init__.py"}
        and ({"tally.cli", "tally.cli.main"} & _imported_modules(path))
    )
    assert offenders == []


def test_unit_of_work_is_implemented_once_in_db_engine() -> None:
    defining = sorted(
        str(path.relative_to(SRC))
        for path in _all_modules()
        if any(
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "unit_of_work"
            for node in ast.parse(path.read_text(encoding="utf-8")).body
        )
    )
    assert defining == ["db/engine.py"]


def _assigns(path: Path, name: str) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
    return False


def test_the_merchant_option_is_defined_once() -> None:
    defining = sorted(
        str(path.relative_to(SRC)) for path in _all_modules() if _assigns(path, "MerchantOption")
    )
    assert defining == ["cli/support.py"]
