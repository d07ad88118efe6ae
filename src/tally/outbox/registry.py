"""Which handlers receive which events, and which periodic jobs exist."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from tally.config import Settings


@dataclass(frozen=True)
class HandlerContext:
    """What a handler gets besides the message: settings and a way to open units of work."""

    settings: Settings
    session_factory: sessionmaker[Session]
    message_id: int
    attempt: int
    merchant_id: int | None


Handler = Callable[[HandlerContext, dict[str, Any]], None]
# A reaction runs inside the unit of work that emitted the event, before it commits: for work
# that must happen with the change or not at all (queueing an email with its mail-log row).
Reaction = Callable[["Session", Any], None]
Job = Callable[["JobContext"], None]


@dataclass(frozen=True)
class JobContext:
    """What a scheduled job gets."""

    settings: Settings
    session_factory: sessionmaker[Session]


@dataclass(frozen=True)
class RunnerContext:
    """What a runner gets: the worker's id (for leases) and the event set when it stops."""

    settings: Settings
    session_factory: sessionmaker[Session]
    worker_id: str
    stopping: threading.Event


Runner = Callable[[RunnerContext], bool]
"""Long work (an import) a worker runs in a thread of its own, so deliveries go on meanwhile:
one call claims and does one piece, and returns whether there was any."""


class RetryLater(Exception):
    """Raised by a handler to be tried again after a given delay (e.g. a rate limit reset)."""

    def __init__(self, reason: str, *, delay_seconds: float) -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds


class PermanentFailure(Exception):
    """Raised by a handler when retrying cannot help; the message is marked failed at once."""


@dataclass
class Registry:
    """Handlers per event type and periodic jobs; the default one is filled at start-up."""

    handlers: dict[str, dict[str, Handler]] = field(default_factory=dict)
    reactions: dict[str, dict[str, Reaction]] = field(default_factory=dict)
    jobs: dict[str, tuple[timedelta, Job]] = field(default_factory=dict)
    runners: dict[str, Runner] = field(default_factory=dict)
    builtins_loaded: bool = False

    def subscribe(self, event_type: str, name: str, handler: Handler) -> None:
        """Deliver every future event of this type to `handler`, under a stable name."""
        self.handlers.setdefault(event_type, {})[name] = handler

    def react(self, event_type: str, name: str, reaction: Reaction) -> None:
        """Run `reaction(session, event)` in the emitting transaction for every such event."""
        self.reactions.setdefault(event_type, {})[name] = reaction

    def reactions_to(self, event_type: str) -> list[Reaction]:
        """The reactions to an event type, in a stable order."""
        found = self.reactions.get(event_type, {})
        return [found[name] for name in sorted(found)]

    def handler_names(self, event_type: str) -> list[str]:
        """Names of the handlers subscribed to an event type."""
        return sorted(self.handlers.get(event_type, {}))

    def handler(self, event_type: str, name: str) -> Handler | None:
        """The handler registered under this name for this event type."""
        return self.handlers.get(event_type, {}).get(name)

    def schedule(self, name: str, every: timedelta, job: Job) -> None:
        """Run `job` about every `every`, on exactly one worker at a time."""
        self.jobs[name] = (every, job)

    def run_long(self, name: str, runner: Runner) -> None:
        """Have every worker call `runner` in a thread of its own, again at once while it works."""
        self.runners[name] = runner


default_registry = Registry()


def _register(module: str, registry: Registry) -> None:
    register = getattr(importlib.import_module(module), "register", None)
    if callable(register):
        register(registry)


def ensure_builtin_plugins(registry: Registry = default_registry) -> None:
    """Register the built-in handlers, reactions and jobs once.

    Called wherever an event is emitted, so no entry point can forget it: a CLI command that
    changes points must reach Dotdigital and queue emails exactly as the API does.
    """
    if registry.builtins_loaded:
        return
    registry.builtins_loaded = True
    for module in _BUILTIN_PLUGINS:
        _register(module, registry)


def load_plugins(settings: Settings, registry: Registry = default_registry) -> None:
    """Import the modules that register handlers and jobs (built-in ones, then configured ones)."""
    ensure_builtin_plugins(registry)
    for module in [m.strip() for m in settings.plugin_modules.split(",") if m.strip()]:
        _register(module, registry)


_BUILTIN_PLUGINS: list[str] = [
    "tally.program.jobs",
    "tally.notifications.handlers",
    "tally.notifications.team_emails",
    "tally.integrations.dotdigital.handlers",
    "tally.imports.queue",
    "tally.webhooks.handlers",
]
