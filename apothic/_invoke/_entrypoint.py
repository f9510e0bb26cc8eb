"""Local entrypoints: ``@app.local_entrypoint()`` and the flags ``apothic run`` gives them.

An entrypoint is a plain function of the user's that runs on the caller's machine while the
app is live (``apothic run app.py``, ``with app.run():``). Its parameters become command-line
flags: ``def main(n: int = 3, name: str = "x", shout: bool = False)`` takes
``--n 5 --name y --shout`` (``--no-shout`` for False; ``--max-items`` and ``--max_items`` both
name ``max_items``). A flag is a str, int, float or bool; a parameter without an annotation
takes the type of its default (str if it has none); ``X | None`` is X, unset by default.
Other types are refused when the entrypoint is decorated.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._options._problems import show
from ..exceptions import InvalidError

if TYPE_CHECKING:
    from .._app import App

FLAG_TYPES: dict[Any, str] = {str: "str", int: "int", float: "float", bool: "bool"}
_BY_NAME = {"str": str, "int": int, "float": float, "bool": bool}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_EXAMPLES = {int: "5", float: "0.5", str: "text"}


class Flag:
    """One parameter of an entrypoint as a command-line flag."""

    def __init__(self, param: inspect.Parameter, kind: type, optional: bool) -> None:
        self.name = param.name
        self.kind = kind
        self.required = param.default is inspect.Parameter.empty
        self.default = None if self.required else param.default
        self.optional = optional
        self.flag = "--" + param.name.replace("_", "-")

    def usage(self) -> str:
        if self.kind is bool:
            text = f"{self.flag}/--no-{self.flag[2:]}"
        else:
            text = f"{self.flag} {FLAG_TYPES[self.kind].upper()}"
        return text if self.required else f"[{text}]"

    def convert(self, text: str, where: str) -> Any:
        kind = self.kind
        if kind is bool:
            low = text.strip().lower()
            if low in _TRUE or low in _FALSE:
                return low in _TRUE
            raise InvalidError(
                f"{where}: {self.flag}={text!r} is not a bool (parameter {self.name}: bool). "
                f"Fix: write {self.flag} for True or --no-{self.flag[2:]} for False."
            )
        if kind is str:
            return text
        try:
            return kind(text)
        except ValueError:
            pass
        what = "a whole number" if kind is int else "a number"
        raise InvalidError(
            f"{where}: {self.flag} {text!r} is not {'an' if kind is int else 'a'} {FLAG_TYPES[kind]} "
            f"(parameter {self.name}: {FLAG_TYPES[kind]}). Fix: pass {what}, e.g. {self.flag} {_EXAMPLES[kind]}."
        )


def _flag_type(annotation: Any, default: Any) -> tuple[type | None, bool]:
    """The flag type of a parameter (None: not a flag type) and whether ``None`` is allowed."""
    if annotation is inspect.Parameter.empty:
        if default is inspect.Parameter.empty or default is None:
            return str, default is None
        return (type(default), False) if type(default) in FLAG_TYPES else (None, False)
    if isinstance(annotation, str):  # postponed annotations that could not be resolved
        text = annotation.replace(" ", "")
        optional = text.endswith("|None") or text.startswith("None|") or text.startswith("Optional[")
        for token in ("|None", "None|", "Optional[", "]"):
            text = text.replace(token, "")
        return _BY_NAME.get(text), optional
    if annotation in FLAG_TYPES:
        return annotation, False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1 and members[0] in FLAG_TYPES and len(typing.get_args(annotation)) == 2:
            return members[0], True
    return None, False


def entrypoint_flags(fn: Callable[..., Any], where: str) -> list[Flag]:
    """The flags of ``fn``'s parameters; refuses what a command line cannot give."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - a name only the container has: read the text
        hints = {}
    flags, problems = [], []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            problems.append(
                f"parameter {'*' if param.kind is param.VAR_POSITIONAL else '**'}{param.name}: a command line "
                "gives named flags only. Fix: name each parameter (e.g. `def main(n: int = 1)`)."
            )
            continue
        if param.kind is param.POSITIONAL_ONLY:
            problems.append(f"parameter {param.name} is positional-only. Fix: drop the `/` from the signature.")
            continue
        annotation = hints.get(param.name, param.annotation)
        kind, optional = _flag_type(annotation, param.default)
        if kind is None:
            shown = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
            if annotation is inspect.Parameter.empty:
                shown = f"unannotated, default {show(param.default)}"
            problems.append(
                f"parameter {param.name} ({shown}): a flag is a str, int, float or bool. Fix: take one of "
                f"those and convert it in the entrypoint (e.g. `{param.name}: str = '1,2,3'`, then split it)."
            )
            continue
        flags.append(Flag(param, kind, optional))
    if problems:
        raise InvalidError(f"{where}: " + " ".join(problems))
    return flags


class LocalEntrypoint:
    """What ``@app.local_entrypoint()`` returns: the function, still callable as it was,
    registered as an entrypoint of the app (``apothic run FILE`` or ``FILE::NAME``)."""

    def __init__(self, app: App, fn: Callable[..., Any], name: str) -> None:
        self.app = app
        self.raw_f = fn
        self.name = name
        self.is_async = inspect.iscoroutinefunction(fn)
        self.flags = entrypoint_flags(fn, f"@app.local_entrypoint() on {name!r}")
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__
        self.__qualname__ = getattr(fn, "__qualname__", fn.__name__)
        self.__module__ = fn.__module__
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.raw_f(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<apothic.LocalEntrypoint {self.app.name}.{self.name}>"

    def usage(self, target: str) -> str:
        """The help text of ``apothic run TARGET --help``."""
        lines = [f"usage: apothic run {target} " + " ".join(f.usage() for f in self.flags)]
        doc = inspect.getdoc(self.raw_f)
        if doc:
            lines += ["", doc]
        if self.flags:
            lines += ["", "flags:"]
            for f in self.flags:
                default = "required" if f.required else f"default {show(f.default)}"
                lines.append(f"  {f.usage().strip('[]'):28} {FLAG_TYPES[f.kind]}, {default}")
        return "\n".join(lines)

    def parse(self, argv: list[str], where: str) -> dict[str, Any]:
        """The keyword arguments that ``argv`` (``--n 5 --shout``) gives; every problem is an
        :class:`InvalidError` that names the flag, the value and the fix."""
        return parse_flags(self.flags, argv, where, positional=False)[1]


def parse_flags(
    flags: list[Flag], argv: list[str], where: str, *, positional: bool
) -> tuple[list[str], dict[str, Any]]:
    """Split ``argv`` into positional values (only with ``positional``) and typed flags."""
    by_name = {}
    for f in flags:
        by_name[f.name] = f
        by_name[f.name.replace("_", "-")] = f
    names = sorted(f.flag for f in flags)
    values: dict[str, Any] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--" and positional:  # what follows is positional, even if it starts with --
            rest.extend(argv[i:])
            break
        if not token.startswith("--") or token == "--":
            if positional:
                rest.append(token)
                continue
            raise InvalidError(
                f"{where}: {token!r} is not a flag; an entrypoint takes named flags"
                + (f" ({', '.join(names)})" if names else " (it takes none)")
                + ". Fix: write `--NAME VALUE`, e.g. " + (f"`{names[0]} ...`." if names else "drop the value.")
            )
        key, eq, text = token[2:].partition("=")
        negated = key.startswith("no-") and key[3:] in by_name and by_name[key[3:]].kind is bool
        flag = by_name.get(key[3:] if negated else key)
        if flag is None:
            close = difflib.get_close_matches("--" + key, names, n=1)
            raise InvalidError(
                f"{where}: unknown flag --{key}"
                + (f" (did you mean {close[0]}?)" if close else "")
                + f"; it takes {', '.join(names) if names else 'no flags'}. Fix: use one of those."
            )
        if flag.name in values:
            raise InvalidError(f"{where}: {flag.flag} is given twice. Fix: give it once.")
        if flag.kind is bool:
            if negated:
                if eq:
                    raise InvalidError(f"{where}: {token!r} takes no value. Fix: write --no-{key[3:]} alone.")
                values[flag.name] = False
            else:
                values[flag.name] = flag.convert(text, where) if eq else True
            continue
        if not eq:
            if i >= len(argv) or (argv[i].startswith("--") and argv[i] != "--"):
                raise InvalidError(
                    f"{where}: {flag.flag} needs a value ({FLAG_TYPES[flag.kind]}). "
                    f"Fix: write {flag.flag} {_EXAMPLES[flag.kind]}."
                )
            text = argv[i]
            i += 1
        values[flag.name] = flag.convert(text, where)
    missing = [f for f in flags if f.required and f.name not in values]
    if missing and not positional:
        raise InvalidError(
            f"{where}: missing required flag(s) {', '.join(f.flag for f in missing)}. Fix: pass them, e.g. "
            + " ".join(f"{f.flag}" + ("" if f.kind is bool else f" {_EXAMPLES[f.kind]}") for f in missing) + "."
        )
    return rest, values


def function_flags(fn: Callable[..., Any]) -> list[Flag]:
    """The parameters of an app function that a command line can set by name (others are
    given positionally, as JSON)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001
        hints = {}
    flags = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            continue
        kind, optional = _flag_type(hints.get(param.name, param.annotation), param.default)
        if kind is not None:
            flags.append(Flag(param, kind, optional))
    return flags
