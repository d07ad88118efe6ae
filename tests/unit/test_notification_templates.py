"""Notification templates: documented variables, escaping, shipped defaults and validation."""

from __future__ import annotations

import pytest

from tally.notifications.templates import (
    TEMPLATE_VARIABLES,
    EmailTemplate,
    EmailType,
    RenderedEmail,
    TemplateError,
    TemplatePart,
    TemplateProblem,
    default_template,
    render,
    sample_variables,
    validate_template,
    variables_for,
)

DOCUMENTED = {
    "customer_first_name",
    "customer_last_name",
    "customer_name",
    "customer_email",
    "points",
    "balance",
    "reward_name",
    "coupon_code",
    "tier_name",
    "referral_url",
    "expiry_date",
    "store_name",
    "store_url",
    "unsubscribe_url",
    "claim_url",
}


def _problems(template: EmailTemplate, email_type: EmailType) -> tuple[TemplateProblem, ...]:
    with pytest.raises(TemplateError) as caught:
        validate_template(template, email_type)
    return caught.value.problems


def test_documented_variables_are_exactly_the_published_set() -> None:
    assert set(TEMPLATE_VARIABLES) == DOCUMENTED
    assert all(description.strip() for description in TEMPLATE_VARIABLES.values())
    # Every documented variable is usable by at least one email type.
    assert set().union(*(variables_for(email_type) for email_type in EmailType)) == DOCUMENTED


def test_email_types_are_the_twelve_notifications() -> None:
    assert [email_type.value for email_type in EmailType] == [
        "points_earned",
        "signup_points",
        "birthday_points",
        "custom_action_points",
        "create_account_points",
        "claim_points_invitation",
        "reward_redeemed",
        "vip_tier_earned",
        "expiry_reminder",
        "expiry_last_chance",
        "referral_sender_reward",
        "referral_receiver_reward",
    ]


def test_render_fills_every_documented_variable_in_all_three_parts() -> None:
    names = sorted(DOCUMENTED)
    source = "\n".join(f"{name}=[{{{{ {name} }}}}]" for name in names)
    values = {name: f"value-{index}" for index, name in enumerate(names)}
    expected = "\n".join(f"{name}=[value-{index}]" for index, name in enumerate(names))

    rendered = render(EmailTemplate(source, source, source), values)

    # The subject is folded onto one line; the bodies keep their lines.
    assert rendered == RenderedEmail(
        subject=expected.replace("\n", " "), html=expected, text=expected
    )


def test_html_escapes_customer_names_and_subject_and_text_keep_them_verbatim() -> None:
    name = '<script>alert("hi")</script> & O\'Brien'
    template = EmailTemplate(
        subject="Hello {{ customer_first_name }}",
        html_body="<p>Hello {{ customer_first_name }}</p>",
        text_body="Hello {{ customer_first_name }}",
    )

    rendered = render(template, {"customer_first_name": name})

    assert rendered.html == (
        "<p>Hello &lt;script&gt;alert(&#34;hi&#34;)&lt;/script&gt; &amp; O&#39;Brien</p>"
    )
    assert rendered.subject == "Hello " + name
    assert rendered.text == "Hello " + name


def test_default_template_escapes_customer_name_in_html() -> None:
    variables = sample_variables(EmailType.POINTS_EARNED)
    variables["customer_first_name"] = "<b>Eve</b>"

    rendered = render(default_template(EmailType.POINTS_EARNED), variables)

    assert "Hi &lt;b&gt;Eve&lt;/b&gt;," in rendered.html
    assert "<b>Eve</b>" not in rendered.html
    assert "Hi <b>Eve</b>," in rendered.text


@pytest.mark.parametrize("email_type", list(EmailType))
def test_every_shipped_default_validates_and_renders_with_only_its_variables(
    email_type: EmailType,
) -> None:
    template = default_template(email_type)
    variables = sample_variables(email_type)

    validate_template(template, email_type)
    rendered = render(template, variables)

    assert set(variables) == set(variables_for(email_type))
    assert set(variables) <= DOCUMENTED
    assert rendered.subject
    assert "\n" not in rendered.subject
    assert "{" not in rendered.subject + rendered.html + rendered.text
    assert rendered.html.startswith("<!DOCTYPE html>")
    # Every email carries a working unsubscribe link in both bodies.
    assert f'href="{variables["unsubscribe_url"]}"' in rendered.html
    assert f"Unsubscribe: {variables['unsubscribe_url']}" in rendered.text


def test_points_earned_default_reads_naturally() -> None:
    variables = sample_variables(EmailType.POINTS_EARNED) | {"points": 1, "balance": 41}

    rendered = render(default_template(EmailType.POINTS_EARNED), variables)

    assert rendered.subject == "You earned 1 point at Example Store"
    assert rendered.text.startswith(
        "Hi Alex,\n\nThanks for shopping with Example Store. You just earned 1 point, "
        "bringing your balance to 41 points.\n\n"
    )


def test_default_greeting_falls_back_when_the_first_name_is_empty() -> None:
    variables = sample_variables(EmailType.CLAIM_POINTS_INVITATION) | {"customer_first_name": ""}

    rendered = render(default_template(EmailType.CLAIM_POINTS_INVITATION), variables)

    assert rendered.text.startswith("Hi there,\n")
    assert "Claim my points: https://shop.example.com/account/register?claim=sample" in (
        rendered.text
    )


def test_reward_redeemed_default_shows_the_coupon_only_when_there_is_one() -> None:
    variables = sample_variables(EmailType.REWARD_REDEEMED)
    template = default_template(EmailType.REWARD_REDEEMED)

    with_code = render(template, variables)
    without_code = render(template, variables | {"coupon_code": ""})

    assert "Use this code at checkout: TALLY-5OFF-Q7M2\n" in with_code.text
    assert "TALLY-5OFF-Q7M2" in with_code.html
    assert "Use this code at checkout" not in without_code.text
    assert "Use this code at checkout" not in without_code.html
    assert "on $5 off your next order.\n\nYour remaining balance is 1250 points." in (
        without_code.text
    )


def test_undefined_variable_is_refused_with_its_line_and_a_suggestion() -> None:
    template = EmailTemplate(
        subject="Hi",
        html_body="<p>Hello</p>\n<p>{{ customer_frist_name }}</p>",
        text_body="Hello",
    )

    assert _problems(template, EmailType.POINTS_EARNED) == (
        TemplateProblem(
            TemplatePart.HTML,
            2,
            "unknown variable 'customer_frist_name' (did you mean 'customer_first_name'?)",
        ),
    )


def test_documented_variable_of_another_email_type_is_refused() -> None:
    template = EmailTemplate(
        subject="Hi", html_body="<p>Hi</p>", text_body="Hi\n\nYour code: {{ coupon_code }}"
    )

    assert _problems(template, EmailType.POINTS_EARNED) == (
        TemplateProblem(
            TemplatePart.TEXT, 3, "variable 'coupon_code' is not available in points_earned emails"
        ),
    )
    validate_template(template, EmailType.REWARD_REDEEMED)


def test_syntax_error_is_refused_with_its_line_and_reason() -> None:
    template = EmailTemplate(
        subject="You earned {{ points }} points",
        html_body="<p>Hi</p>\n\n<p>{{ points + }}</p>",
        text_body="Hi",
    )

    assert _problems(template, EmailType.POINTS_EARNED) == (
        TemplateProblem(TemplatePart.HTML, 3, "unexpected 'end of print statement'"),
    )


def test_problems_in_every_part_are_reported_together() -> None:
    template = EmailTemplate(
        subject="{{ reward }}",
        html_body="<p>{{ points|money }}</p>",
        text_body="Hi\n{% if points %}\nYou have points",
    )

    assert _problems(template, EmailType.POINTS_EARNED) == (
        TemplateProblem(TemplatePart.SUBJECT, 1, "unknown variable 'reward'"),
        TemplateProblem(TemplatePart.HTML, 1, "No filter named 'money'."),
        TemplateProblem(
            TemplatePart.TEXT,
            3,
            "Unexpected end of template. Jinja was looking for the following tags: 'elif' or "
            "'else' or 'endif'. The innermost block that needs to be closed is 'if'.",
        ),
    )


def test_trial_render_catches_errors_the_parser_cannot_see() -> None:
    template = EmailTemplate(
        subject="Hi",
        html_body="<p>Hi</p>\n<p>{{ customer_name.nickname }}</p>",
        text_body="Half your points: {{ points / 0 }}",
    )

    assert _problems(template, EmailType.POINTS_EARNED) == (
        TemplateProblem(TemplatePart.HTML, 2, "'str object' has no attribute 'nickname'"),
        TemplateProblem(TemplatePart.TEXT, 1, "ZeroDivisionError: division by zero"),
    )


def test_sandbox_refuses_access_to_python_internals() -> None:
    template = EmailTemplate(
        subject="Hi", html_body="{{ customer_name.__class__.__mro__ }}", text_body="Hi"
    )

    assert _problems(template, EmailType.POINTS_EARNED) == (
        TemplateProblem(
            TemplatePart.HTML, 1, "access to attribute '__class__' of 'str' object is unsafe."
        ),
    )


def test_empty_subject_is_refused() -> None:
    template = EmailTemplate(subject="  \n", html_body="<p>Hi</p>", text_body="Hi")

    assert _problems(template, EmailType.VIP_TIER_EARNED) == (
        TemplateProblem(TemplatePart.SUBJECT, None, "the subject is empty"),
    )


def test_render_refuses_missing_values_instead_of_sending_blanks() -> None:
    variables = sample_variables(EmailType.POINTS_EARNED)
    del variables["points"]

    with pytest.raises(TemplateError) as caught:
        render(default_template(EmailType.POINTS_EARNED), variables)

    assert [(problem.part, problem.reason) for problem in caught.value.problems] == [
        (TemplatePart.SUBJECT, "'points' is undefined"),
        (TemplatePart.HTML, "'points' is undefined"),
        (TemplatePart.TEXT, "'points' is undefined"),
    ]
    assert [problem.line for problem in caught.value.problems] == [1, 10, 3]


def test_subject_whitespace_is_folded_onto_one_line() -> None:
    template = EmailTemplate(
        subject="Welcome\n  to {{ tier_name }}!\n", html_body="<p>x</p>", text_body="x"
    )

    assert render(template, {"tier_name": "Gold"}).subject == "Welcome to Gold!"


def test_problem_text_names_part_and_line() -> None:
    error = TemplateError(
        [
            TemplateProblem(TemplatePart.TEXT, 4, "unknown variable 'x'"),
            TemplateProblem(TemplatePart.SUBJECT, None, "the subject is empty"),
        ]
    )

    assert str(error) == "text line 4: unknown variable 'x'; subject: the subject is empty"
