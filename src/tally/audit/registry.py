"""Which models the audit log records, declared by the domain that owns each one.

A domain puts ``@audited("reward")`` on an ORM class: from then on every insert, update and
delete of it that a unit of work with an actor flushes is recorded (``recorder.py``). Nothing
else has to remember to write the log, so a new admin verb is audited by using the admin's
unit of work, and a new model by declaring it here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

MASK = "***"

T = TypeVar("T")


@dataclass(frozen=True)
class AuditSpec:
    """How one model is audited.

    ``secrets`` are shown as ``***`` (a change to them is recorded, never the value);
    ``ignored`` attributes are bookkeeping that changes with every use (counters, timestamps);
    with ``only``, nothing but those attributes is compared. ``sections`` names a target of its
    own for an attribute (the program settings on the merchant row are the ``program``), used
    when that attribute is all that changed. ``merchant_attribute`` holds the merchant's id.
    """

    target_type: str
    secrets: frozenset[str] = frozenset()
    ignored: frozenset[str] = frozenset()
    only: frozenset[str] | None = None
    sections: Mapping[str, str] = field(default_factory=dict)
    merchant_attribute: str = "merchant_id"
    on: frozenset[str] = frozenset({"created", "updated", "deleted"})

    def compared(self, attribute: str) -> bool:
        """Whether a change to this attribute is recorded."""
        if self.only is not None:
            return attribute in self.only
        return attribute not in self.ignored


_SPECS: dict[type, AuditSpec] = {}

ALWAYS_IGNORED = frozenset({"id", "merchant_id", "created_at", "updated_at"})


def audited(
    target_type: str,
    *,
    secrets: Iterable[str] = (),
    ignore: Iterable[str] = (),
    only: Iterable[str] | None = None,
    sections: Mapping[str, str] | None = None,
    merchant_attribute: str = "merchant_id",
    on: Iterable[str] = ("created", "updated", "deleted"),
) -> Callable[[type[T]], type[T]]:
    """Class decorator: record this model's changes in the audit log (see ``AuditSpec``)."""
    spec = AuditSpec(
        target_type=target_type,
        secrets=frozenset(secrets),
        ignored=ALWAYS_IGNORED | frozenset(ignore),
        only=None if only is None else frozenset(only),
        sections=dict(sections or {}),
        merchant_attribute=merchant_attribute,
        on=frozenset(on),
    )

    def declare(cls: type[T]) -> type[T]:
        _SPECS[cls] = spec
        return cls

    return declare


def spec_for(instance: Any) -> AuditSpec | None:
    """The audit spec of an ORM instance's class, if its domain declared one."""
    return _SPECS.get(type(instance))


def audited_types() -> dict[type, AuditSpec]:
    """Every declared model and its spec (for tests and documentation)."""
    return dict(_SPECS)
