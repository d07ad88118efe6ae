"""Which admin pages a role may use: routes declare permissions, the signed-in admin is checked.

Every admin route that needs a signed-in admin declares what it needs with
``dependencies=[requires(Permission.X)]``, on the route or on the router it is included with
(``admin/routes.py`` declares most of them per router). The declaration is a marker that
FastAPI runs before the route's other dependencies: it notes itself on the request. The check
is in ``web.current_admin``, the one dependency that resolves the signed-in admin: it refuses
with 403 unless the admin's role holds every permission the noted requirements name. A route
that declares nothing is refused to everyone, so a page that forgets its permission fails
loudly instead of opening to every role; ``tests/integration/test_admin_roles.py`` walks every
admin route to prove each one declares a permission and refuses the roles without it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request

from tally.merchants.team import NotPermitted, Permission, Role, permissions_of


@dataclass(frozen=True)
class Requirement:
    """The permissions a route needs; ``otherwise`` is where a GET goes instead of a 403."""

    permissions: frozenset[Permission]
    otherwise: str | None = None

    def __call__(self, request: Request) -> None:
        """Note this requirement on the request for `enforce` (run by `current_admin`)."""
        noted: tuple[Requirement, ...] = getattr(request.state, "admin_requirements", ())
        request.state.admin_requirements = (*noted, self)
        admin = getattr(request.state, "admin", None)
        if admin is not None:
            # Some dependency resolved the admin before this marker ran: check it now.
            _check(request, admin.role, (self,))


class SeeOther(Exception):
    """Send the browser to another page (a role's own start page instead of a 403)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def requires(*permissions: Permission, otherwise: str | None = None) -> Any:
    """Declare what a route (or a router's routes) needs; no permissions: any team member."""
    return Depends(Requirement(frozenset(permissions), otherwise))


def requirements_of(route: object) -> list[Requirement]:
    """The requirements among a route's dependencies (for tests walking the routes)."""
    dependencies: Iterable[Any] = getattr(route, "dependencies", None) or ()
    return [d.dependency for d in dependencies if isinstance(d.dependency, Requirement)]


def enforce(request: Request, role: str) -> None:
    """Refuse (NotPermitted, 403) unless the role holds what the matched route declares."""
    requirements: tuple[Requirement, ...] = getattr(request.state, "admin_requirements", ())
    if not requirements:
        raise NotPermitted("This page declares no permission, so nobody may use it.")
    _check(request, role, requirements)


def _check(request: Request, role: str, requirements: Iterable[Requirement]) -> None:
    held = permissions_of(role)
    for requirement in requirements:
        if requirement.permissions <= held:
            continue
        if requirement.otherwise is not None and request.method == "GET":
            raise SeeOther(requirement.otherwise)
        raise NotPermitted(
            f"Your role ({role}) does not include this page. An owner of the store can change "
            "your role on the Team page."
        )


def can(role: str, permission: str) -> bool:
    """Whether a role holds a permission (for templates: which links to show)."""
    return Permission(permission) in permissions_of(role)


__all__ = ["Permission", "Requirement", "Role", "SeeOther", "can", "enforce", "requires"]
