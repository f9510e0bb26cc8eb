"""The one rule for names: apps, functions, volumes and secrets."""

from __future__ import annotations

from typing import Any

from .._contracts import NAME_RE
from ..exceptions import InvalidError
from ._problems import format_problem, show

NAME_ALLOWED = "1-63 letters, digits, '_', '-' and '.', starting with a letter or digit"


def name_problem(loc: str, value: Any, example: str) -> str | None:
    """The problem line for a bad name (``None`` when ``value`` is a valid name)."""
    if isinstance(value, str) and NAME_RE.match(value):
        return None
    return format_problem(loc, value, NAME_ALLOWED, f"rename it, e.g. {example}", "invalid name")


def check_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a valid ``kind`` name (app, function), else raise InvalidError."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidError(
            f"{kind} name {show(name)} is invalid: allowed are {NAME_ALLOWED}. "
            f"Fix: rename it, e.g. {kind}='my-{kind}'."
        )
    return name
