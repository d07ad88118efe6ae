"""Who acts in a unit of work: an admin, a command-line user, an API key (or the system)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

ACTOR_KEY = "audit_actor"


@dataclass(frozen=True)
class Actor:
    """The one who acts: ``kind`` (admin, cli, api-key), an id where there is one, a label."""

    kind: str
    label: str
    id: str | None = None
    request_id: str | None = None
    address: str | None = None

    @property
    def name(self) -> str:
        """How lists show the actor: ``admin:ana@shop.com``, ``cli:ana``, ``api-key:shop``."""
        return f"{self.kind}:{self.label}"


def act_as(session: Session, actor: Actor | None) -> None:
    """Record every audited change this session flushes as done by ``actor`` (None: nobody)."""
    if actor is None:
        session.info.pop(ACTOR_KEY, None)
    else:
        session.info[ACTOR_KEY] = actor


def actor_of(session: Session) -> Actor | None:
    """The actor of this session's unit of work; None for the worker, jobs and bulk paths."""
    found = session.info.get(ACTOR_KEY)
    return found if isinstance(found, Actor) else None
