"""The program settings as a YAML document a merchant keeps in version control: rendering it,
reading one back with errors that name the line or the field, and the changes between two."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import yaml
from pydantic import ValidationError

from tally.errors import FieldProblem, ValidationFailed
from tally.program.settings import ProgramSettings


def render(settings: ProgramSettings) -> str:
    """The settings as YAML, sections in the model's order (the same document as the API's)."""
    text: str = yaml.safe_dump(
        settings.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=100
    )
    return text


@dataclass(frozen=True)
class Document:
    """A program document read from a file: the settings it asks for and the version it was
    written from (None when the file does not say)."""

    settings: ProgramSettings
    based_on: int | None


def read(text: str, source: str) -> Document:
    """Parse and validate a program document; refusals name the file and the line or field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "document"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValidationFailed(
            f"{source} is not valid YAML", [FieldProblem(where, problem)]
        ) from exc
    if not isinstance(data, dict):
        raise ValidationFailed(
            f"{source} is not a program document",
            [FieldProblem("document", "expected a mapping of settings sections")],
        )
    based_on = data.pop("version", None)
    if based_on is not None and (not isinstance(based_on, int) or isinstance(based_on, bool)):
        raise ValidationFailed(
            f"{source} is not a program document",
            [FieldProblem("version", "expected the whole number of the version it came from")],
        )
    unknown = sorted(set(data) - set(ProgramSettings.model_fields))
    if unknown:
        raise ValidationFailed(
            f"{source} has unknown settings sections",
            [FieldProblem(name, "not a settings section") for name in unknown],
        )
    try:
        settings = ProgramSettings.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(
            f"{source} is not a valid program",
            [
                FieldProblem(_path(err["loc"]) or "document", err["msg"], _scalar(err["input"]))
                for err in exc.errors()
            ],
        ) from exc
    return Document(settings=settings, based_on=based_on)


@dataclass(frozen=True)
class Change:
    """One difference between two programs, at a path like `rewards[ten-off].points_cost`."""

    path: str
    before: Any
    after: Any

    def describe(self) -> str:
        """One line: `+` added, `-` removed, `~` changed."""
        if self.before is _ABSENT:
            return f"+ {self.path}: {_shown(self.after)}"
        if self.after is _ABSENT:
            return f"- {self.path}: {_shown(self.before)}"
        return f"~ {self.path}: {_shown(self.before)} -> {_shown(self.after)}"


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


_ABSENT: Any = _Absent()


def changes(before: ProgramSettings, after: ProgramSettings) -> list[Change]:
    """Every difference between two programs, the version number aside.

    Values are compared as the model holds them (so `1` and `1.0` points per unit are equal),
    and lists of things with an `id` (rewards, custom actions, tiers) are matched by id, so
    moving or inserting one does not show every later item as changed.
    """
    found: list[Change] = []
    old = before.model_dump(mode="python", exclude={"version"})
    new = after.model_dump(mode="python", exclude={"version"})
    _compare("", old, new, found)
    return found


def _compare(path: str, old: Any, new: Any, found: list[Change]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            _compare(
                f"{path}.{key}" if path else str(key),
                old.get(key, _ABSENT),
                new.get(key, _ABSENT),
                found,
            )
    elif isinstance(old, list | tuple) and isinstance(new, list | tuple):
        old_items, new_items = _keyed(list(old)), _keyed(list(new))
        if old_items is not None and new_items is not None:
            for key in list(old_items) + [k for k in new_items if k not in old_items]:
                _compare(
                    f"{path}[{key}]",
                    old_items.get(key, _ABSENT),
                    new_items.get(key, _ABSENT),
                    found,
                )
        else:
            for index in range(max(len(old), len(new))):
                _compare(
                    f"{path}[{index}]",
                    old[index] if index < len(old) else _ABSENT,
                    new[index] if index < len(new) else _ABSENT,
                    found,
                )
    elif old != new:
        found.append(Change(path, _plain(old), _plain(new)))


def _keyed(items: list[Any]) -> dict[str, Any] | None:
    """The items by id when every item is a mapping with a distinct id, else None."""
    if not all(isinstance(item, dict) and "id" in item for item in items):
        return None
    keyed = {str(item["id"]): item for item in items}
    return keyed if len(keyed) == len(items) else None


def _plain(value: Any) -> Any:
    # Shown values read as the YAML does: enums as their text, decimals without Decimal('…').
    return value if value is _ABSENT else _jsonable(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _shown(value: Any) -> str:
    text: str = yaml.safe_dump(
        _jsonable(value), default_flow_style=True, sort_keys=False, width=10_000
    ).strip()
    return text.removesuffix("\n...").strip()


def _scalar(value: Any) -> Any:
    # A section or list that failed is not worth repeating back; a wrong value is.
    return None if isinstance(value, dict | list) else _jsonable(value)


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
