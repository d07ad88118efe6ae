"""Imports every ORM module so `Base.metadata` knows all tables (for Alembic and tests).

Any module named `orm` inside the `tally` package is picked up, so a new domain package only
has to put its tables in `<package>/orm.py`.
"""

from __future__ import annotations

import importlib
import pkgutil

import tally
from tally.db.base import Base


def _import_orm_modules() -> list[str]:
    names = [
        info.name
        for info in pkgutil.walk_packages(tally.__path__, prefix="tally.")
        if info.name.rsplit(".", 1)[-1] == "orm"
    ]
    for name in sorted(names):
        importlib.import_module(name)
    return names


ORM_MODULES = _import_orm_modules()

__all__ = ["ORM_MODULES", "Base"]
