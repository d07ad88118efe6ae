"""What a merchant sets for the widget: its texts and colours, and the store origins allowed.

Pure rules: no database, no framework. The texts have English defaults so a new store's widget
reads well before anyone opens the admin's Storefront page.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from tally.errors import FieldProblem, ValidationFailed

MAX_TEXT = 120
MAX_ORIGINS = 20
Colour = Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]


class Position(StrEnum):
    """Which bottom corner of the page the launcher sits in."""

    LEFT = "left"
    RIGHT = "right"


class Appearance(BaseModel):
    """The widget's colours and texts (stored as JSON on the storefront settings)."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    primary_colour: Colour = "#5b3df5"
    text_colour: Colour = "#ffffff"
    launcher_label: Text = "Rewards"
    title: Text = "Our rewards program"
    guest_message: Text = "Join to earn points on every order."
    position: Position = Position.RIGHT


def origin_of(url: str) -> str | None:
    """The origin (scheme://host[:port]) of an http(s) URL with nothing after it, else None.

    Browsers send `Origin` in exactly this form, lower-case and without a default port, so the
    comparison with an allowed origin is a plain string match.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return None
    if parts.path not in {"", "/"} or parts.query or parts.fragment or parts.username:
        return None
    default = 443 if parts.scheme == "https" else 80
    host = parts.hostname
    if ":" in host:  # an IPv6 literal keeps its brackets in an origin
        host = f"[{host}]"
    suffix = f":{port}" if port is not None and port != default else ""
    return f"{parts.scheme}://{host}{suffix}"


def base_origin(url: str) -> str | None:
    """The origin of any http(s) URL, whatever its path (Tally's own public base URL)."""
    parts = urlsplit(url)
    return origin_of(f"{parts.scheme}://{parts.netloc}")


def checked_origins(values: Iterable[str]) -> list[str]:
    """The store origins as browsers send them, de-duplicated in order; refuses anything else."""
    found: list[str] = []
    problems = []
    for index, value in enumerate(values):
        origin = origin_of(value)
        if origin is None:
            problems.append(
                FieldProblem(
                    f"allowed_origins.{index}",
                    "expected an origin such as https://shop.example.com (no path)",
                    value,
                )
            )
        elif origin not in found:
            found.append(origin)
    if problems:
        raise ValidationFailed("an allowed origin is not valid", problems)
    if len(found) > MAX_ORIGINS:
        raise ValidationFailed(
            "too many allowed origins",
            [FieldProblem("allowed_origins", f"at most {MAX_ORIGINS} origins")],
        )
    return found
