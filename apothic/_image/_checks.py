"""Checks of the arguments that image specs take, collected per definition.

Each ``check_*`` function validates one value, adds a problem (the bad value, what is allowed,
the fix) to a :class:`Problems` and returns the normalised value, or ``None`` when it failed,
so that one definition reports every problem at once.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

__all__ = [
    "MODULE_NAME",
    "SUPPORTED_PYTHON_VERSIONS",
    "Problems",
    "check_bool",
    "check_hash",
    "check_local_path",
    "check_packages",
    "check_python_version",
    "check_remote_path",
    "check_str",
    "check_url",
    "expect_keys",
    "flatten",
    "invalid",
]

#: Python versions a ``debian_slim`` base (or ``add_python=``) can provide, as "3.X".
SUPPORTED_PYTHON_VERSIONS: tuple[str, ...] = ("3.9", "3.10", "3.11", "3.12", "3.13")

#: A dotted Python module name, as ``add_local_python_source`` takes it.
MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")

_HEX64 = re.compile(r"[0-9a-f]{64}")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def invalid(message: str) -> NoReturn:
    from ..exceptions import InvalidError

    raise InvalidError(message)


class Problems:
    """Collects every problem of one definition, then raises once."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if len(self.items) == 1:
            invalid(f"{self.where}: {self.items[0]}")
        lines = "\n".join(f"  - {m}" for m in self.items)
        invalid(f"{self.where}: {len(self.items)} problems:\n{lines}")


def check_python_version(value: object, param: str, problems: Problems) -> str | None:
    if isinstance(value, str) and value in SUPPORTED_PYTHON_VERSIONS:
        return value
    allowed = ", ".join(repr(v) for v in SUPPORTED_PYTHON_VERSIONS)
    hint = ""
    if isinstance(value, str):
        m = re.fullmatch(r"(3\.\d+)\.\d+", value.strip())
        if m and m.group(1) in SUPPORTED_PYTHON_VERSIONS:
            hint = f"; drop the patch version: {param}={m.group(1)!r}"
    elif isinstance(value, (int, float)):
        hint = f"; pass a string, e.g. {param}='3.11'"
    problems.add(f"{param}={value!r} is not supported; use one of {allowed} (form '3.X'){hint}")
    return None


def flatten(items: Iterable[Any], what: str, problems: Problems) -> list[str]:
    """Flatten strings and (nested) iterables of strings; report every other leaf."""
    out: list[str] = []

    def visit(x: Any) -> None:
        if isinstance(x, str):
            out.append(x)
        elif isinstance(x, (bytes, bytearray, Mapping)) or not isinstance(x, Iterable):
            problems.add(
                f"{what} {x!r} has type {type(x).__name__}; pass strings, or lists of strings"
            )
        else:
            for y in x:
                visit(y)

    visit(items)
    return out


def check_packages(raw: Iterable[Any], what: str, apt: bool, problems: Problems) -> list[str]:
    result = []
    for pkg in flatten(raw, what, problems):
        name = pkg.strip()
        if not name:
            problems.add(f"{what} {pkg!r} is empty; each {what} must be a non-empty name")
        elif name.startswith("-"):
            fix = (
                "apt options are not supported; use run_commands(...) for unusual installs"
                if apt
                else "use index_url=, extra_index_url= or pre=, or run_commands(...)"
            )
            problems.add(f"{what} {pkg!r} looks like a command-line option; {fix}")
        elif apt and any(c.isspace() for c in name):
            problems.add(
                f"{what} {pkg!r} contains whitespace; pass each apt package as its own "
                "string, e.g. apt_install('git', 'curl')"
            )
        elif any(c in name for c in "\r\n\0"):
            problems.add(
                f"{what} {pkg!r} contains a line break or NUL; pass one requirement per string"
            )
        else:
            result.append(name)
    return result


def check_url(value: object, param: str, problems: Problems) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and _URL.fullmatch(value.strip()):
        return value.strip()
    problems.add(
        f"{param}={value!r} is not a URL; pass e.g. {param}='https://pypi.example.com/simple'"
    )
    return None


def check_remote_path(value: object, param: str, problems: Problems) -> str | None:
    """Validate and normalise an absolute POSIX path inside the image."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        problems.add(f"{param}={value!r} must be a non-empty absolute path such as '/app'")
        return None
    if "\0" in value:
        problems.add(f"{param}={value!r} contains a NUL character")
        return None
    if not value.startswith("/"):
        problems.add(
            f"{param}={value!r} is relative; paths inside the image must be absolute, "
            f"e.g. {param}={'/' + value.lstrip('./')!r}"
        )
        return None
    norm = posixpath.normpath(value)
    if norm.startswith("//"):  # POSIX keeps a leading '//'; it means '/' here.
        norm = "/" + norm.lstrip("/")
    return norm


def check_hash(value: object, param: str, problems: Problems) -> str | None:
    if isinstance(value, str) and _HEX64.fullmatch(value):
        return value
    problems.add(f"{param}={value!r} must be a lowercase hex SHA-256 (64 characters)")
    return None


def check_str(value: object, param: str, problems: Problems) -> str | None:
    if isinstance(value, str) and value:
        return value
    problems.add(f"{param}={value!r} must be a non-empty string")
    return None


def check_bool(value: object, param: str, problems: Problems) -> bool:
    if isinstance(value, bool):
        return value
    problems.add(f"{param}={value!r} must be True or False")
    return False


def check_local_path(value: object, param: str, problems: Problems) -> str | None:
    """Absolute, normalised local path (symlinks are not resolved)."""
    if isinstance(value, (str, os.PathLike)):
        try:
            text = os.fspath(value)
        except TypeError:
            text = None
        if isinstance(text, str) and text:
            return os.path.abspath(os.path.expanduser(text))
    problems.add(f"{param}={value!r} must be a path (str or os.PathLike) to a local file")
    return None


def expect_keys(raw: Mapping[str, Any], allowed: Iterable[str], p: Problems) -> bool:
    extra = sorted(set(raw) - set(allowed))
    for key in extra:
        p.add(f"unknown field {key!r} (written by a newer Apothic?)")
    return not extra
