"""The errors an import raises, and how an unexpected one is logged and shown to the merchant."""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from tally.errors import Conflict, DomainError, FieldProblem, ValidationFailed
from tally.imports.orm import ImportJob

# The operator looks for import failures under this name (docs/architecture.md).
log = logging.getLogger("tally.imports.service")
_P = ParamSpec("_P")
_T = TypeVar("_T")


class ImportFileRefused(ValidationFailed, title="Import file refused"):
    """The file cannot be imported at all (encoding, header, broken CSV)."""


class ImportRefused(ValidationFailed, title="Import refused"):
    """The file has invalid rows; nothing was imported."""

    def __init__(self, job: ImportJob) -> None:
        errors = [
            FieldProblem(
                f"row {error['row']}, {error['column']}",
                f"expected {error['expected']}",
                error["value"],
            )
            for error in job.errors
        ]
        super().__init__(
            f"{job.invalid_count} of the {job.total_rows} rows of {job.file_name} "
            f"{'is' if job.invalid_count == 1 else 'are'} not valid, so nothing was imported "
            f"(job {job.id}). Correct the file, or import with skip-invalid to import the valid "
            "rows and get the others back in a file.",
            errors,
        )
        self.job = job


class ImportInProgress(Conflict, title="Import in progress"):
    """The same file is being imported right now."""


class RevertRefused(Conflict, title="Revert refused"):
    """An import cannot be reverted (not finished, already reverted, or points spent)."""


class ImportFailed(DomainError):
    """An import stopped on an unexpected error: the merchant gets a reference, the log the rest.

    Raised from the original error (``__cause__``). ``job`` is the job marked failed, if any.
    """

    status_code = 500
    title = "Import failed"
    job: ImportJob | None = None


def hiding_unexpected_errors(function: Callable[_P, _T]) -> Callable[_P, _T]:
    """``function`` raising ``ImportFailed`` for an unexpected error (domain errors pass)."""

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return function(*args, **kwargs)
        except DomainError:
            raise
        except Exception as exc:
            raise unexpected(exc, None) from exc

    return wrapper


def unexpected(exc: Exception, job_id: int | None) -> ImportFailed:
    """Log ``exc`` (call it while handling it) and make the merchant's side of it.

    A driver's message can carry SQL and the file's values, and a merchant can do nothing with
    it; the operator finds it in the log by the reference.
    """
    reference = secrets.token_hex(4)
    log.exception(
        "import %s failed unexpectedly (reference %s)",
        job_id if job_id is not None else "preview",
        reference,
        exc_info=exc,
    )
    return ImportFailed(
        f"the import failed unexpectedly (reference {reference}); "
        "the operator's log has the details"
    )
