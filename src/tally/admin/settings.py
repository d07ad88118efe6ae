"""Program settings: earning actions, rewards, VIP tiers, referrals, expiry and API keys (the
email templates have their own module). Every change goes through ``update_program``
(validated as a whole, versioned)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from tally.admin.permissions import Permission, requires
from tally.admin.web import (
    Admin,
    AdminDep,
    AdminRoute,
    FormDep,
    checkbox,
    redirect,
    render,
    text,
)
from tally.api.edge import Id
from tally.db.base import utcnow
from tally.errors import FieldProblem, NotFound, PreconditionFailed, ValidationFailed
from tally.merchants import service as merchants
from tally.program import redemptions
from tally.program import service as program_service
from tally.program.config_service import update_program
from tally.program.settings import (
    ExpiryMode,
    LimitPeriod,
    OrderPointsMode,
    ProgramSettings,
    VipMetric,
    WindowKind,
)

N = TypeVar("N", int, Decimal)

router = APIRouter(route_class=AdminRoute)

SECTIONS = ("earning", "rewards", "vip", "referrals", "expiry")
REWARD_TYPES = {
    "fixed_amount": "Fixed amount off",
    "percentage": "Percentage off",
    "free_shipping": "Free shipping",
    "free_product": "Free product",
    "variable": "Amount off chosen by the customer",
}

# --------------------------------------------------------------------------- form parsing


class Draft:
    """What the admin typed in one section's form, shown again when the form is refused."""

    def __init__(self, form: Mapping[str, Any] | None = None, section: str = "") -> None:
        self.values = {k: v for k, v in (form or {}).items() if isinstance(v, str)}
        self.section = section

    def _mine(self, name: str) -> bool:
        return bool(self.section) and name.split(".", 1)[0] == self.section

    def value(self, name: str, stored: object) -> object:
        """The typed value of a field, or the stored one."""
        if self._mine(name):
            return self.values.get(name, "")
        return "" if stored is None else stored

    def checked(self, name: str, stored: bool) -> bool:
        """Whether a checkbox shows ticked."""
        if self._mine(name):
            return name in self.values
        return stored


def problem(field: str, message: str, value: object = None) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", [FieldProblem(field, message, value)])


def _parsed(name: str, raw: str, parse: Callable[[str], N], message: str) -> N:
    # int() raises ValueError and Decimal() InvalidOperation (a subclass of ArithmeticError).
    try:
        return parse(raw)
    except (ValueError, InvalidOperation):
        raise problem(name, message, raw) from None


def whole_number(
    form: FormData, name: str, *, default: int | None = None, minimum: int = 0
) -> int | None:
    """A whole number field; blank gives the default."""
    raw = text(form, name).replace(",", "")
    if not raw:
        return default
    value = _parsed(name, raw, int, "enter a whole number")
    if value < minimum:
        raise problem(name, f"must be at least {minimum}", raw)
    return value


def required_number(form: FormData, name: str, *, minimum: int = 0) -> int:
    """A whole number field that must be filled in."""
    value = whole_number(form, name, minimum=minimum)
    if value is None:
        raise problem(name, "required")
    return value


def amount(form: FormData, name: str) -> Decimal | None:
    """A money or rate field; blank is None."""
    raw = text(form, name).replace(",", "")
    if not raw:
        return None
    value = _parsed(name, raw, Decimal, "enter a number, e.g. 10 or 2.50")
    if not value.is_finite() or value < 0:
        raise problem(name, "enter a positive number", raw)
    return value


def slug(name: str) -> str:
    """An identifier made from a display name ('Gold tier' -> 'gold-tier')."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return (cleaned or "item")[:64]


def _unique_id(wanted: str, taken: set[str]) -> str:
    if wanted not in taken:
        return wanted
    for n in range(2, 1000):
        candidate = f"{wanted[:60]}-{n}"
        if candidate not in taken:
            return candidate
    raise problem("id", "choose another id", wanted)


def _limit(form: FormData, prefix: str) -> dict[str, Any] | None:
    count = whole_number(form, f"{prefix}.limit_count", minimum=1)
    period = text(form, f"{prefix}.limit_period")
    if count is None or not period:
        return None
    if period not in {p.value for p in LimitPeriod}:
        raise problem(f"{prefix}.limit_period", "choose a period", period)
    return {"max_count": count, "period": period}


# --------------------------------------------------------------------------- rendering


def _load(admin: Admin) -> ProgramSettings:
    with admin.unit_of_work() as session:
        return program_service.load(session, admin.merchant_id).settings


def settings_page(
    request: Request,
    admin: Admin,
    section: str,
    *,
    problems: list[FieldProblem] | None = None,
    draft: Draft | None = None,
    status_code: int = 200,
    template: str | None = None,
    settings: ProgramSettings | None = None,
    **extra: Any,
) -> HTMLResponse:
    """A settings section's page (or ``template``, e.g. an edit page) with its form context."""
    settings = settings or _load(admin)
    titles = {
        "earning": "Earning actions",
        "rewards": "Rewards",
        "vip": "VIP tiers",
        "referrals": "Referrals",
        "expiry": "Points expiry",
    }
    context: dict[str, Any] = {
        "title": titles[section],
        "nav": f"settings-{section}",
        "settings": settings,
        "problems": problems or [],
        "draft": draft or Draft(),
        "currency": admin.currency,
        "reward_types": REWARD_TYPES,
        "limit_periods": [p.value for p in LimitPeriod],
        "order_modes": [m.value for m in OrderPointsMode],
        "vip_metrics": [m.value for m in VipMetric],
        "window_kinds": [k.value for k in WindowKind],
        "expiry_modes": [m.value for m in ExpiryMode],
    }
    if section == "rewards":
        with admin.unit_of_work() as session:
            context["pools"] = redemptions.pool_status(session, merchant_id=admin.merchant_id)
    context.update(extra)
    template = template or f"settings/{section}.html"
    return render(request, template, context, status_code=status_code)


def form_version(form: FormData) -> int | None:
    """The settings version a form was rendered from (None when it carries none)."""
    version = text(form, "version")
    return int(version) if version.isdigit() and len(version) < 19 else None


def stale_problem(section: str, error: PreconditionFailed) -> FieldProblem:
    """Why a form rendered from an older settings version was refused."""
    return FieldProblem(
        section, f"{error.detail} (someone saved these settings after you opened the page)"
    )


def save_settings(
    request: Request,
    admin: Admin,
    section: str,
    form: FormData,
    build: Any,
    *,
    refused: Callable[[list[FieldProblem], int], Response] | None = None,
) -> Response:
    """Build the changed sections from the form and save them; show the problems if refused.

    ``refused`` shows them on another page than the section's (an edit page, say).
    """
    draft = Draft(form, text(form, "form"))

    def show(problems: list[FieldProblem], status_code: int) -> Response:
        if refused is not None:
            return refused(problems, status_code)
        return settings_page(
            request, admin, section, problems=problems, draft=draft, status_code=status_code
        )

    try:
        with admin.unit_of_work() as session:
            current = program_service.load(session, admin.merchant_id).settings
            changes = build(current)
            update_program(
                session,
                merchant_id=admin.merchant_id,
                changes=changes,
                # The version the page was rendered from: saving over a newer one is refused.
                expected_version=form_version(form),
                changed_by=admin.email,
            )
    except PreconditionFailed as error:
        return show([stale_problem(section, error)], 409)
    except ValidationFailed as error:
        return show(error.errors or [FieldProblem(section, error.detail)], 422)
    return redirect(f"/admin/settings/{section}?done=saved")


def dump(model: Any) -> Any:
    return model.model_dump(mode="json")


@router.get("/settings", include_in_schema=False)
def settings_home(admin: AdminDep) -> Response:
    """Program settings start with the earning actions."""
    del admin
    return redirect("/admin/settings/earning")


# API keys are the owner's (on top of the program permission every settings page needs).
_API_KEYS = [requires(Permission.API_KEYS)]


@router.get("/settings/api-keys", include_in_schema=False, dependencies=_API_KEYS)
def api_keys(request: Request, admin: AdminDep) -> Response:
    """The merchant's API keys."""
    return api_keys_page(request, admin)


@router.get("/settings/{section}", include_in_schema=False)
def settings_section(request: Request, admin: AdminDep, section: str) -> Response:
    """One section of the program settings."""
    if section not in SECTIONS:
        raise NotFound(f"there is no settings page {section!r}")
    return settings_page(request, admin, section)


# --------------------------------------------------------------------------- earning actions


@router.post("/settings/earning", include_in_schema=False)
def save_earning(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Save one built-in earning action (create account, place order, birthday)."""
    which = text(form, "form")

    def build(current: ProgramSettings) -> dict[str, Any]:
        p = which
        if which in ("create_account", "birthday"):
            # The two actions that award a set number of points share one form.
            return {
                which: {
                    "enabled": checkbox(form, f"{p}.enabled"),
                    "points": required_number(form, f"{p}.points"),
                    "send_email": checkbox(form, f"{p}.send_email"),
                    "limit": _limit(form, p),
                }
            }
        if which == "place_order":
            return {
                "place_order": {
                    "enabled": checkbox(form, f"{p}.enabled"),
                    "mode": text(form, f"{p}.mode") or OrderPointsMode.PER_CURRENCY_UNIT.value,
                    "points_per_unit": str(amount(form, f"{p}.points_per_unit") or Decimal(1)),
                    "fixed_points": whole_number(form, f"{p}.fixed_points", default=0),
                    "count_discounts": checkbox(form, f"{p}.count_discounts"),
                    "include_shipping": checkbox(form, f"{p}.include_shipping"),
                    "include_taxes": checkbox(form, f"{p}.include_taxes"),
                    "minimum_order": _opt_str(amount(form, f"{p}.minimum_order")),
                    "award_on_status": text(form, f"{p}.award_on_status") or "paid",
                    "send_email": checkbox(form, f"{p}.send_email"),
                    "limit": _limit(form, p),
                }
            }
        raise problem("form", "unknown form", which)

    return save_settings(request, admin, "earning", form, build)


def _opt_str(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


@router.post("/settings/earning/custom", include_in_schema=False)
def add_custom_action(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Add a custom action (awarded through the API)."""

    def build(current: ProgramSettings) -> dict[str, Any]:
        name = text(form, "custom.name")
        if not name:
            raise problem("custom.name", "required")
        taken = {a.id for a in current.custom_actions}
        action_id = text(form, "custom.id") or _unique_id(slug(name).replace("-", "_"), taken)
        action = {
            "id": action_id,
            "name": name,
            "points": required_number(form, "custom.points"),
            "send_email": checkbox(form, "custom.send_email"),
            "limit": _limit(form, "custom"),
        }
        return {"custom_actions": [*map(dump, current.custom_actions), action]}

    return save_settings(request, admin, "earning", form, build)


@router.post("/settings/earning/custom/{action_id}/delete", include_in_schema=False)
def delete_custom_action(
    request: Request, admin: AdminDep, form: FormDep, action_id: str
) -> Response:
    """Remove a custom action."""

    def build(current: ProgramSettings) -> dict[str, Any]:
        if current.custom_action(action_id) is None:
            raise NotFound(f"there is no custom action {action_id!r}")
        return {"custom_actions": [dump(a) for a in current.custom_actions if a.id != action_id]}

    return save_settings(request, admin, "earning", form, build)


# --------------------------------------------------------------------------- rewards


def reward_from_form(form: FormData, taken: set[str]) -> dict[str, Any]:
    name = text(form, "reward.name")
    if not name:
        raise problem("reward.name", "required")
    kind = text(form, "reward.type")
    if kind not in REWARD_TYPES:
        raise problem("reward.type", "choose a reward type", kind)
    reward: dict[str, Any] = {
        "type": kind,
        "id": text(form, "reward.id") or _unique_id(slug(name), taken),
        "name": name,
        "minimum_order": _opt_str(amount(form, "reward.minimum_order")),
        "coupon_expiry_days": whole_number(form, "reward.coupon_expiry_days", minimum=1),
    }
    if kind == "variable":
        reward["points_per_unit"] = required_number(form, "reward.points_per_unit", minimum=1)
        reward["min_points"] = required_number(form, "reward.min_points", minimum=1)
        reward["max_points"] = whole_number(form, "reward.max_points", minimum=1)
        return reward
    reward["points_cost"] = required_number(form, "reward.points_cost", minimum=1)
    if kind == "fixed_amount":
        value = amount(form, "reward.amount")
        if value is None:
            raise problem("reward.amount", "required for a fixed amount off")
        reward["amount"] = str(value)
    elif kind == "percentage":
        value = amount(form, "reward.percent")
        if value is None:
            raise problem("reward.percent", "required for a percentage off")
        reward["percent"] = str(value)
    elif kind == "free_product":
        product = text(form, "reward.product_id")
        if not product:
            raise problem("reward.product_id", "required for a free product")
        reward["product_id"] = product
    return reward


@router.post("/settings/rewards", include_in_schema=False)
def add_reward(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Add a reward customers can spend points on."""

    def build(current: ProgramSettings) -> dict[str, Any]:
        reward = reward_from_form(form, {r.id for r in current.rewards})
        return {"rewards": [*map(dump, current.rewards), reward]}

    return save_settings(request, admin, "rewards", form, build)


@router.post("/settings/rewards/{reward_id}/{action}", include_in_schema=False)
def change_reward(
    request: Request, admin: AdminDep, form: FormDep, reward_id: str, action: str
) -> Response:
    """Switch a reward on or off, or remove it."""

    def build(current: ProgramSettings) -> dict[str, Any]:
        if current.reward(reward_id) is None:
            raise NotFound(f"there is no reward {reward_id!r}")
        rewards = [dump(r) for r in current.rewards]
        if action == "delete":
            return {"rewards": [r for r in rewards if r["id"] != reward_id]}
        if action in {"enable", "disable"}:
            for reward in rewards:
                if reward["id"] == reward_id:
                    reward["enabled"] = action == "enable"
            return {"rewards": rewards}
        raise NotFound(f"unknown action {action!r}")

    return save_settings(request, admin, "rewards", form, build)


# --------------------------------------------------------------------------- VIP tiers


@router.post("/settings/vip", include_in_schema=False)
def save_vip(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Switch VIP tiers on or off and choose what they measure, over which window."""

    def build(current: ProgramSettings) -> dict[str, Any]:
        kind = text(form, "vip.window_kind") or WindowKind.LIFETIME.value
        days = whole_number(form, "vip.window_days", minimum=1)
        vip = dump(current.vip) | {
            "enabled": checkbox(form, "vip.enabled"),
            "metric": text(form, "vip.metric") or VipMetric.AMOUNT_SPENT.value,
            "window": {"kind": kind, "days": days if kind == WindowKind.ROLLING.value else None},
        }
        return {"vip": vip}

    return save_settings(request, admin, "vip", form, build)


def tier_from_form(form: FormData, tier_id: Callable[[str], str]) -> dict[str, Any]:
    """A tier from the form's ``tier.*`` fields; ``tier_id`` gives its id from its name."""
    name = text(form, "tier.name")
    if not name:
        raise problem("tier.name", "required")
    threshold = amount(form, "tier.threshold")
    if threshold is None:
        raise problem("tier.threshold", "required")
    multiplier = amount(form, "tier.multiplier") or Decimal(1)
    return {
        "id": tier_id(name),
        "name": name,
        "threshold": str(threshold),
        "multiplier": str(multiplier),
        "entry_reward_points": whole_number(form, "tier.entry_reward_points", default=0),
        "send_email": checkbox(form, "tier.send_email"),
    }


def vip_with_tiers(current: ProgramSettings, tiers: list[dict[str, Any]]) -> dict[str, Any]:
    """The VIP section with these tiers, kept in order of threshold."""
    ordered = sorted(tiers, key=lambda t: Decimal(str(t["threshold"])))
    return {"vip": dump(current.vip) | {"tiers": ordered}}


@router.post("/settings/vip/tiers", include_in_schema=False)
def add_tier(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Add a VIP tier (kept in order of threshold)."""

    def build(current: ProgramSettings) -> dict[str, Any]:
        taken = {t.id for t in current.vip.tiers}
        tier = tier_from_form(
            form, lambda name: text(form, "tier.id") or _unique_id(slug(name), taken)
        )
        return vip_with_tiers(current, [*map(dump, current.vip.tiers), tier])

    return save_settings(request, admin, "vip", form, build)


@router.post("/settings/vip/tiers/{tier_id}/delete", include_in_schema=False)
def delete_tier(request: Request, admin: AdminDep, form: FormDep, tier_id: str) -> Response:
    """Remove a VIP tier (customers in it move when their tier is next reviewed)."""

    def build(current: ProgramSettings) -> dict[str, Any]:
        if not any(t.id == tier_id for t in current.vip.tiers):
            raise NotFound(f"there is no tier {tier_id!r}")
        tiers = [dump(t) for t in current.vip.tiers if t.id != tier_id]
        return {"vip": dump(current.vip) | {"tiers": tiers}}

    return save_settings(request, admin, "vip", form, build)


# --------------------------------------------------------------------------- referrals, expiry


@router.post("/settings/referrals", include_in_schema=False)
def save_referrals(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Referral rewards for the referrer and the friend."""

    def build(current: ProgramSettings) -> dict[str, Any]:
        milestone_count = whole_number(form, "referral.milestone_count", minimum=1)
        milestone = None
        if milestone_count is not None:
            milestone = {
                "mode": text(form, "referral.milestone_mode") or "every",
                "count": milestone_count,
                "bonus_points": whole_number(form, "referral.milestone_bonus", default=0),
            }
        referral = dump(current.referral) | {
            "enabled": checkbox(form, "referral.enabled"),
            "sender_points": whole_number(form, "referral.sender_points", default=0),
            "receiver_points": whole_number(form, "referral.receiver_points", default=0),
            "minimum_order": _opt_str(amount(form, "referral.minimum_order")),
            "milestone": milestone,
            "send_email": checkbox(form, "referral.send_email"),
            "limit": _limit(form, "referral"),
        }
        return {"referral": referral}

    return save_settings(request, admin, "referrals", form, build)


def expiry_changes(current: ProgramSettings, form: FormData, now: datetime) -> dict[str, Any]:
    """The new expiry policy; ``enabled_at`` moves when expiry is switched on or changes mode."""
    mode = text(form, "expiry.mode") or ExpiryMode.OFF.value
    if mode not in {m.value for m in ExpiryMode}:
        raise problem("expiry.mode", "choose a policy", mode)
    policy = current.expiry
    enabled_at = policy.enabled_at
    if mode == ExpiryMode.OFF.value:
        enabled_at = None
    elif mode != policy.mode.value or enabled_at is None:
        enabled_at = now
    return {
        "expiry": {
            "mode": mode,
            "days": required_number(form, "expiry.days", minimum=1),
            "reminder_days_before": whole_number(form, "expiry.reminder_days_before", minimum=1),
            "last_chance_days_before": whole_number(
                form, "expiry.last_chance_days_before", minimum=1
            ),
            "enabled_at": enabled_at.isoformat() if enabled_at else None,
        }
    }


@router.post("/settings/expiry", include_in_schema=False)
def save_expiry(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """The expiry policy and its reminders."""
    return save_settings(
        request, admin, "expiry", form, lambda current: expiry_changes(current, form, utcnow())
    )


# --------------------------------------------------------------------------- API keys


def api_keys_page(
    request: Request, admin: Admin, *, issued: merchants.IssuedApiKey | None = None
) -> HTMLResponse:
    """The merchant's API keys; a new key's secret appears once, right after creating it."""
    with admin.unit_of_work() as session:
        keys = merchants.list_api_keys(session, merchant_id=admin.merchant_id)
    return render(
        request,
        "settings/api_keys.html",
        {"title": "API keys", "nav": "settings-api-keys", "keys": keys, "issued": issued},
        status_code=201 if issued else 200,
    )


@router.post("/settings/api-keys", include_in_schema=False, dependencies=_API_KEYS)
def create_api_key(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Create an API key and show its secret this once."""
    name = text(form, "name")[:100] or "default"
    with admin.unit_of_work() as session:
        issued = merchants.create_api_key(session, merchant_id=admin.merchant_id, name=name)
    return api_keys_page(request, admin, issued=issued)


@router.post("/settings/api-keys/{key_id}/revoke", include_in_schema=False, dependencies=_API_KEYS)
def revoke_api_key(admin: AdminDep, form: FormDep, key_id: Id) -> Response:
    """Revoke a key; requests with it are refused from now on."""
    del form
    with admin.unit_of_work() as session:
        merchants.revoke_api_key(session, merchant_id=admin.merchant_id, key_id=key_id)
    return redirect("/admin/settings/api-keys?done=key-revoked")
