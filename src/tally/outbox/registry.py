"""Which handlers receive which events, and which periodic jobs exist."""

from __future__ import annotations

import importlib
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
Job = Callable[["JobContext"], None]


@dataclass(frozen=True)
class JobContext:
    """What a scheduled job gets."""

    settings: Settings
    session_factory: sessionmaker[Session]


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
    jobs: dict[str, tuple[timedelta, Job]] = field(default_factory=dict)

    def subscribe(self, event_type: str, name: str, handler: Handler) -> None:
        """Deliver every future event of this type to `handler`, under a stable name."""
        self.handlers.setdefault(event_type, {})[name] = handler

    def handler_names(self, event_type: str) -> list[str]:
        """Names of the handlers subscribed to an event type."""
        return sorted(self.handlers.get(event_type, {}))

    def handler(self, event_type: str, name: str) -> Handler | None:
        """The handler registered under this name for this event type."""
        return self.handlers.get(event_type, {}).get(name)

    def schedule(self, name: str, every: timedelta, job: Job) -> None:
        """Run `job` about every `every`, on exactly one worker at a time."""
        self.jobs[name] = (every, job)


default_registry = Registry()


def load_plugins(settings: Settings, registry: Registry = default_registry) -> None:
    """Import the modules that register handlers and jobs (built-in ones, then configured ones)."""
    for module in _BUILTIN_PLUGINS + [
        m.strip() for m in settings.plugin_modules.split(",") if m.strip()
    ]:
        mod = importlib.import_module(module)
        register = getattr(mod, "register", None)
        if callable(register):
            register(registry)


_BUILTIN_PLUGINS: list[str] = [
    "tally.program.jobs",
    "tally.notifications.handlers",
    "tally.integrations.dotdigital.handlers",
]
