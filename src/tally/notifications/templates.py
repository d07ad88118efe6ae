"""Email templates: the types Tally sends, their variables, validation and sandboxed rendering.

Merchants may edit every template, so templates are treated as untrusted code: they run in an
immutable Jinja2 sandbox, every variable must be one of the documented ones (`StrictUndefined`
turns a typo into an error instead of an empty string), and the HTML part is autoescaped because
names and other values come from customers. The subject and text parts are not escaped: they are
not HTML, and the email library encodes headers safely.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from types import MappingProxyType, TracebackType

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

_TEMPLATE_FILENAME = "<template>"  # the filename Jinja2 gives templates compiled from strings


class EmailType(StrEnum):
    """Every kind of notification email Tally sends."""

    # Points for an order (the value predates the per-kind emails and names merchants' edits).
    POINTS_EARNED = "points_earned"
    SIGNUP_POINTS = "signup_points"
    BIRTHDAY_POINTS = "birthday_points"
    CUSTOM_ACTION_POINTS = "custom_action_points"
    # An import created the customer's account and credited points to it.
    CREATE_ACCOUNT_POINTS = "create_account_points"
    # A guest from an order import is invited to create an account to claim pending points.
    CLAIM_POINTS_INVITATION = "claim_points_invitation"
    REWARD_REDEEMED = "reward_redeemed"
    VIP_TIER_EARNED = "vip_tier_earned"
    EXPIRY_REMINDER = "expiry_reminder"
    EXPIRY_LAST_CHANCE = "expiry_last_chance"
    REFERRAL_SENDER_REWARD = "referral_sender_reward"
    REFERRAL_RECEIVER_REWARD = "referral_receiver_reward"


class TemplatePart(StrEnum):
    """The three parts of an email template."""

    SUBJECT = "subject"
    HTML = "html"
    TEXT = "text"


TEMPLATE_VARIABLES: Mapping[str, str] = MappingProxyType(
    {
        "customer_first_name": "The customer's first name; may be empty.",
        "customer_last_name": "The customer's last name; may be empty.",
        "customer_name": "The customer's full name; may be empty.",
        "customer_email": "The customer's email address.",
        "points": "The points this email is about (earned, spent, expiring or to claim), "
        "an integer.",
        "balance": "The customer's points balance after the change, an integer.",
        "reward_name": "The name of the reward, e.g. '$5 off your next order'.",
        "coupon_code": "The coupon code to use at checkout; may be empty when the reward has none.",
        "tier_name": "The name of the VIP tier the customer reached.",
        "referral_url": "The customer's personal referral link to share with friends.",
        "expiry_date": "The date the points expire, formatted for the store's locale and "
        "time zone.",
        "store_name": "The store's name.",
        "store_url": "The store's website address.",
        "unsubscribe_url": "The one-click link that stops these emails.",
        "claim_url": "The link where a guest creates an account to claim their points.",
    }
)

# Every email type has these; Tally fills them from the customer and the store.
COMMON_VARIABLES = frozenset(
    {
        "customer_first_name",
        "customer_last_name",
        "customer_name",
        "customer_email",
        "balance",
        "store_name",
        "store_url",
        "unsubscribe_url",
    }
)

_TYPE_VARIABLES: Mapping[EmailType, frozenset[str]] = MappingProxyType(
    {
        EmailType.POINTS_EARNED: frozenset({"points"}),
        EmailType.SIGNUP_POINTS: frozenset({"points"}),
        EmailType.BIRTHDAY_POINTS: frozenset({"points"}),
        EmailType.CUSTOM_ACTION_POINTS: frozenset({"points"}),
        EmailType.CREATE_ACCOUNT_POINTS: frozenset({"points"}),
        EmailType.CLAIM_POINTS_INVITATION: frozenset({"points", "claim_url"}),
        EmailType.REWARD_REDEEMED: frozenset({"points", "reward_name", "coupon_code"}),
        EmailType.VIP_TIER_EARNED: frozenset({"tier_name"}),
        EmailType.EXPIRY_REMINDER: frozenset({"points", "expiry_date"}),
        EmailType.EXPIRY_LAST_CHANCE: frozenset({"points", "expiry_date"}),
        EmailType.REFERRAL_SENDER_REWARD: frozenset({"reward_name", "coupon_code", "referral_url"}),
        EmailType.REFERRAL_RECEIVER_REWARD: frozenset(
            {"reward_name", "coupon_code", "referral_url"}
        ),
    }
)

_SAMPLE_VALUES: Mapping[str, object] = MappingProxyType(
    {
        "customer_first_name": "Alex",
        "customer_last_name": "Morgan",
        "customer_name": "Alex Morgan",
        "customer_email": "alex.morgan@example.com",
        "points": 150,
        "balance": 1250,
        "reward_name": "$5 off your next order",
        "coupon_code": "TALLY-5OFF-Q7M2",
        "tier_name": "Gold",
        "referral_url": "https://shop.example.com/r/alex-q7m2",
        "expiry_date": "31 March 2026",
        "store_name": "Example Store",
        "store_url": "https://shop.example.com",
        "unsubscribe_url": "https://loyalty.example.com/u/sample",
        "claim_url": "https://shop.example.com/account/register?claim=sample",
    }
)


@dataclass(frozen=True, slots=True)
class EmailTemplate:
    """The Jinja2 source of the three parts of one email."""

    subject: str
    html_body: str
    text_body: str


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """A template rendered with one customer's values, ready to become a MIME message."""

    subject: str
    html: str
    text: str


@dataclass(frozen=True, slots=True)
class TemplateProblem:
    """One thing wrong with a template: which part, which line (when known) and why."""

    part: TemplatePart
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.part} line {self.line}" if self.line is not None else str(self.part)
        return f"{where}: {self.reason}"


class TemplateError(ValueError):
    """A template that cannot be used, with every problem found in it."""

    def __init__(self, problems: list[TemplateProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(problem) for problem in self.problems))


def _make_environment(*, autoescape: bool) -> ImmutableSandboxedEnvironment:
    # trim_blocks/lstrip_blocks keep `{% if %}` lines from leaving blank lines in the text part.
    return ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
    )


_HTML_ENVIRONMENT = _make_environment(autoescape=True)
_PLAIN_ENVIRONMENT = _make_environment(autoescape=False)


def _environment(part: TemplatePart) -> ImmutableSandboxedEnvironment:
    return _HTML_ENVIRONMENT if part is TemplatePart.HTML else _PLAIN_ENVIRONMENT


@functools.lru_cache(maxsize=256)
def _compile(part: TemplatePart, source: str) -> jinja2.Template:
    # Compiling is the slow step and a bulk send renders one template thousands of times.
    return _environment(part).from_string(source)


def _parts(template: EmailTemplate) -> tuple[tuple[TemplatePart, str], ...]:
    return (
        (TemplatePart.SUBJECT, template.subject),
        (TemplatePart.HTML, template.html_body),
        (TemplatePart.TEXT, template.text_body),
    )


def variables_for(email_type: EmailType) -> frozenset[str]:
    """The documented variables a template of this type may use."""
    return COMMON_VARIABLES | _TYPE_VARIABLES[email_type]


def sample_variables(email_type: EmailType) -> dict[str, object]:
    """Realistic example values for every variable of this type, for previews and trial renders."""
    return {name: _SAMPLE_VALUES[name] for name in sorted(variables_for(email_type))}


def default_template(email_type: EmailType) -> EmailTemplate:
    """The template Tally ships for this type, used until the merchant edits it."""
    folder = resources.files("tally.notifications") / "default_templates"

    def read(suffix: str) -> str:
        return (folder / f"{email_type.value}.{suffix}.j2").read_text(encoding="utf-8")

    return EmailTemplate(subject=read("subject"), html_body=read("html"), text_body=read("txt"))


def _line_of(error: BaseException) -> int | None:
    """The template line an exception was raised on, from Jinja2's rewritten traceback."""
    line = getattr(error, "lineno", None)
    if isinstance(line, int):
        return line
    traceback: TracebackType | None = error.__traceback__
    found: int | None = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == _TEMPLATE_FILENAME:
            found = traceback.tb_lineno
        traceback = traceback.tb_next
    return found


def _unknown_variable_reason(name: str, email_type: EmailType) -> str:
    if name in TEMPLATE_VARIABLES:
        return f"variable '{name}' is not available in {email_type.value} emails"
    reason = f"unknown variable '{name}'"
    suggestions = difflib.get_close_matches(name, sorted(variables_for(email_type)), n=1)
    if suggestions:
        reason += f" (did you mean '{suggestions[0]}'?)"
    return reason


def _static_problems(
    part: TemplatePart, source: str, email_type: EmailType
) -> list[TemplateProblem]:
    """Syntax errors and variables outside the documented set, found without rendering."""
    environment = _environment(part)
    try:
        # Compiling also catches unknown filters and tests, which parsing alone does not.
        _compile(part, source)
        tree = environment.parse(source)
    except jinja2.TemplateSyntaxError as error:
        return [TemplateProblem(part, error.lineno, error.message or "invalid template syntax")]
    allowed = variables_for(email_type) | set(environment.globals)
    unknown = meta.find_undeclared_variables(tree) - allowed
    problems: list[TemplateProblem] = []
    seen: set[tuple[str, int]] = set()
    for name_node in tree.find_all(nodes.Name):
        key = (name_node.name, name_node.lineno)
        if name_node.ctx == "load" and name_node.name in unknown and key not in seen:
            seen.add(key)
            problems.append(
                TemplateProblem(
                    part, name_node.lineno, _unknown_variable_reason(name_node.name, email_type)
                )
            )
    return problems


def _render_part(part: TemplatePart, source: str, variables: Mapping[str, object]) -> str:
    try:
        output = _compile(part, source).render(dict(variables))
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(
            [TemplateProblem(part, error.lineno, error.message or "invalid template syntax")]
        ) from error
    except jinja2.UndefinedError as error:
        reason = error.message or "undefined value"
        raise TemplateError([TemplateProblem(part, _line_of(error), reason)]) from error
    except jinja2.TemplateError as error:  # includes the sandbox's SecurityError
        raise TemplateError([TemplateProblem(part, _line_of(error), str(error))]) from error
    except (ArithmeticError, TypeError, ValueError, LookupError) as error:
        # Templates may compute ("{{ points * 2 }}"); a mistake there is the template's fault.
        reason = f"{type(error).__name__}: {error}"
        raise TemplateError([TemplateProblem(part, _line_of(error), reason)]) from error
    if part is TemplatePart.SUBJECT:
        # A header is one line; collapsing whitespace also removes the newline Jinja2 keeps
        # when the subject template spans several lines.
        return " ".join(output.split())
    return output


def render(template: EmailTemplate, variables: Mapping[str, object]) -> RenderedEmail:
    """Render the three parts; raise `TemplateError` if any part fails."""
    problems: list[TemplateProblem] = []
    rendered: dict[TemplatePart, str] = {}
    for part, source in _parts(template):
        try:
            rendered[part] = _render_part(part, source, variables)
        except TemplateError as error:
            problems.extend(error.problems)
    if problems:
        raise TemplateError(problems)
    return RenderedEmail(
        subject=rendered[TemplatePart.SUBJECT],
        html=rendered[TemplatePart.HTML],
        text=rendered[TemplatePart.TEXT],
    )


def validate_template(template: EmailTemplate, email_type: EmailType) -> None:
    """Raise `TemplateError` listing every syntax error, unknown variable and failed render."""
    problems: list[TemplateProblem] = []
    samples = sample_variables(email_type)
    for part, source in _parts(template):
        static = _static_problems(part, source, email_type)
        if static:
            # A trial render would only repeat the first of these problems.
            problems.extend(static)
            continue
        try:
            output = _render_part(part, source, samples)
        except TemplateError as error:
            problems.extend(error.problems)
            continue
        if not output.strip():
            problems.append(TemplateProblem(part, None, f"the {part} is empty"))
    if problems:
        raise TemplateError(problems)
