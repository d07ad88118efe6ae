"""Editing a reward or a VIP tier in place, with a preview of what it does to customers first.

The form posts twice: ``step=preview`` works out the effect from the data (who can afford the
reward at its new cost; which customers the tier review would move, by the tier engine's own
rules) and shows it with the form still filled in; ``step=save`` saves a new program version
like every settings form (a form rendered from an older version gets a 409). Tier moves then
happen in the tier review the change triggers (``VipTiersChanged``), never here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from tally.admin.settings import (
    Draft,
    dump,
    form_version,
    reward_from_form,
    save_settings,
    settings_page,
    stale_problem,
    tier_from_form,
    vip_with_tiers,
)
from tally.admin.web import Admin, AdminDep, AdminRoute, FormDep, text
from tally.db.base import utcnow
from tally.errors import FieldProblem, NotFound, PreconditionFailed, ValidationFailed
from tally.program import impact, redemptions
from tally.program import service as program_service
from tally.program.config_service import changed_settings
from tally.program.settings import ProgramSettings, Tier

router = APIRouter(route_class=AdminRoute)

Build = Callable[[ProgramSettings], dict[str, Any]]


def _tier(settings: ProgramSettings, tier_id: str) -> Tier:
    tier = next((t for t in settings.vip.tiers if t.id == tier_id), None)
    if tier is None:
        raise NotFound(f"there is no tier {tier_id!r}")
    return tier


def _reward_changes(form: FormData, reward_id: str) -> Build:
    def build(current: ProgramSettings) -> dict[str, Any]:
        stored = redemptions.find_reward(current, reward_id)
        # The id stays (redemptions and code pools name it); so does on/off, a button of its own.
        edited = reward_from_form(form, set()) | {"id": reward_id, "enabled": stored.enabled}
        rewards = [edited if r.id == reward_id else dump(r) for r in current.rewards]
        return {"rewards": rewards}

    return build


def _tier_changes(form: FormData, tier_id: str) -> Build:
    def build(current: ProgramSettings) -> dict[str, Any]:
        _tier(current, tier_id)
        # The id stays: customers' stored tiers and the entry-reward ledger keys name it.
        edited = tier_from_form(form, lambda name: tier_id)
        tiers = [edited if t.id == tier_id else dump(t) for t in current.vip.tiers]
        return vip_with_tiers(current, tiers)

    return build


def _preview(admin: Admin, form: FormData, build: Build, kind: str, item_id: str) -> Any:
    """The unsaved settings' effect on customers (refused like a save: stale or invalid)."""
    with admin.unit_of_work() as session:
        program = program_service.load(session, admin.merchant_id)
        expected = form_version(form)
        if expected is not None and expected != program.settings.version:
            raise PreconditionFailed(
                f"the program settings are at version {program.settings.version}, not "
                f"{expected}: reload them and apply your change again"
            )
        after = changed_settings(program.settings, build(program.settings))
        if kind == "reward":
            return impact.afford_impact(
                session,
                merchant_id=admin.merchant_id,
                before=program.settings.reward(item_id),
                after=redemptions.find_reward(after, item_id),
            )
        return impact.tier_impact(session, impact.with_settings(program, after), now=utcnow())


def _edit_page(
    request: Request,
    admin: Admin,
    kind: str,
    item_id: str,
    *,
    form: FormData | None = None,
    problems: list[FieldProblem] | None = None,
    preview: Any = None,
    status_code: int = 200,
) -> Response:
    section = "rewards" if kind == "reward" else "vip"
    with admin.unit_of_work() as session:
        settings = program_service.load(session, admin.merchant_id).settings
    item: Any = (
        redemptions.find_reward(settings, item_id) if kind == "reward" else _tier(settings, item_id)
    )
    version = form_version(form) if form is not None else None
    return settings_page(
        request,
        admin,
        section,
        template="settings/item_edit.html",
        settings=settings,
        problems=problems,
        draft=Draft(form, kind) if form is not None else None,
        status_code=status_code,
        kind=kind,
        item=item,
        preview=preview,
        version=settings.version if version is None else version,
        tier_names={t.id: t.name for t in settings.vip.tiers},
    )


def _edit(request: Request, admin: Admin, form: FormData, kind: str, item_id: str) -> Response:
    build = _reward_changes(form, item_id) if kind == "reward" else _tier_changes(form, item_id)
    section = "rewards" if kind == "reward" else "vip"

    def refused(problems: list[FieldProblem], status_code: int) -> Response:
        return _edit_page(
            request, admin, kind, item_id, form=form, problems=problems, status_code=status_code
        )

    if text(form, "step") != "save":
        try:
            preview = _preview(admin, form, build, kind, item_id)
        except PreconditionFailed as error:
            return refused([stale_problem(section, error)], 409)
        except ValidationFailed as error:
            return refused(error.errors or [FieldProblem(section, error.detail)], 422)
        return _edit_page(request, admin, kind, item_id, form=form, preview=preview)
    return save_settings(request, admin, section, form, build, refused=refused)


def _routes(kind: str, path: str, what: str) -> None:
    def edit_form(request: Request, admin: AdminDep, item_id: str) -> Response:
        return _edit_page(request, admin, kind, item_id)

    def edit(request: Request, admin: AdminDep, form: FormDep, item_id: str) -> Response:
        return _edit(request, admin, form, kind, item_id)

    edit_form.__doc__ = f"A {kind}'s edit form."
    edit.__doc__ = f"Preview ({what}) or save a {kind}'s changes."
    router.add_api_route(path, edit_form, methods=["GET"], include_in_schema=False)
    router.add_api_route(path, edit, methods=["POST"], include_in_schema=False)


_routes("reward", "/settings/rewards/{item_id}/edit", "who can afford it at the new cost")
_routes("tier", "/settings/vip/tiers/{item_id}/edit", "which customers move")
