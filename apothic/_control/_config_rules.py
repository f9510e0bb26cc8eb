"""What each setting of ``temporal-dev.yaml`` and the environment accepts, and how a problem
with one is worded: the source (file or variable), the key path, the bad value, the allowed
range and the fix. Used by ``_config``, whose dataclasses annotate their fields with the types
below (pydantic checks them strictly: no quoted numbers, no ``"false"`` for a bool).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import re
import types
import typing
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, BaseModel, Field, Strict, ValidationError

from .._data._serialization import MAX_INLINE_BYTES
from ..exceptions import InvalidError

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


@dataclasses.dataclass(frozen=True)
class Rule:
    """How a setting is described in an error: what it accepts, an example value (default:
    the field's default) and a hint appended to the fix. A validator's ``ValueError`` adds
    its message, when it has one, as a detail."""

    allowed: str
    example: Any = None
    hint: str = ""


_HOST = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")


def is_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return bool(_HOST.fullmatch(text))


def _host(v: str) -> str:
    if not is_host(v):
        raise ValueError("")
    return v


def _name(v: str) -> str:
    if not v or any(c.isspace() for c in v):
        raise ValueError("it has spaces" if v else "")
    return v


def host_port(text: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` too) with a port from 1 to 65535, or None."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d{1,5})|([^:/\s\[\]]+):(\d{1,5})", text)
    if not m:
        return None
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    return (host, int(port)) if is_host(host) and 1 <= int(port) <= 65535 else None


def _registry(v: str) -> str:
    if "://" in v:
        raise ValueError("a URL; give host:port without the scheme")
    host, _, path = v.partition("/")
    ok = host_port(host) is not None or is_host(host)
    if not ok or (path and not re.fullmatch(r"[a-z0-9._/-]+", path)):
        raise ValueError("")
    return v


def _url(v: str) -> str:
    if v and not is_url(v):
        raise ValueError("")
    return v


def is_url(v: str) -> bool:
    try:
        parts = urlsplit(v)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # e.g. a port that is not a number or out of range
        return False


def _store(v: str) -> str:
    if "://" in v:
        if not v.startswith("s3://"):
            raise ValueError(f"a {v.split('://')[0]}:// URL; only s3:// stores exist")
        bucket = v[len("s3://"):].split("/")[0]
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            raise ValueError(f"{bucket!r} is not an S3 bucket name" if bucket else "no bucket")
    return v


def _region(v: str) -> str:
    if v and not re.fullmatch(r"[A-Za-z0-9_-]+", v):
        raise ValueError("")
    return v


def _db_file(v: str) -> str:
    if v not in ("", ":memory:") and Path(v).expanduser().is_dir():
        raise ValueError("that is a folder")
    return v


def _secrets_file(v: str) -> str:
    if v and (v.endswith("/") or Path(v).expanduser().is_dir()):
        raise ValueError("that is a folder; name the file")
    if "\0" in v:
        raise ValueError("it contains a NUL character")
    return v


def _enabled(v: Any) -> Any:
    if v is True or v is False or v == "auto":
        return v
    raise ValueError("write true or false without quotes" if str(v).lower() in TRUE | FALSE else "")


def _pragma_value(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, (str, int)) or not re.fullmatch(r"-?[A-Za-z0-9_]+", str(v)):
        raise ValueError("")
    return v


def _json_value(v: Any) -> Any:
    try:
        json.dumps(v, allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError("") from None
    return v


def _count(lo: int, hi: int) -> Any:
    return Annotated[int, Strict(), Field(ge=lo, le=hi), Rule(f"an integer from {lo} to {hi}")]


Port = Annotated[int, Strict(), Field(ge=1, le=65535), Rule("an integer from 1 to 65535")]
Seconds = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False), Rule("a number of seconds > 0")]
Flag = Annotated[bool, Strict(), Rule("true or false")]
Host = Annotated[str, Strict(), AfterValidator(_host), Rule("an IP address or host name", "127.0.0.1")]
Name = Annotated[str, Strict(), AfterValidator(_name), Rule("a non-empty name without spaces")]
LogLevel = Annotated[
    Literal["debug", "info", "warn", "error", "never"], Rule("one of debug, info, warn, error, never")
]
DbFile = Annotated[
    str, Strict(), AfterValidator(_db_file),
    Rule('a file name (under $APOTHIC_HOME) or an absolute path; "" or :memory: keep no file'),
]
PragmaName = Annotated[str, Strict(), Field(pattern=r"^[a-z_]+$"), Rule("a SQLite pragma name", "journal_mode")]
PragmaValue = Annotated[Any, AfterValidator(_pragma_value), Rule("a word or a whole number", "WAL")]
ConfigKey = Annotated[
    str, Strict(), Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$"),
    Rule("a Temporal dynamic config key", "history.transferProcessorMaxPollRPS"),
]
ConfigValue = Annotated[Any, AfterValidator(_json_value), Rule("a JSON value (number, string, list, mapping)", 1000)]
Store = Annotated[
    str, Strict(), AfterValidator(_store),
    Rule("a folder, or s3://bucket/prefix", "s3://my-bucket/apothic", ", or empty for $APOTHIC_HOME/blobs"),
]
Threshold = Annotated[
    int, Strict(), Field(ge=0, le=MAX_INLINE_BYTES),
    Rule(f"an integer from 0 to {MAX_INLINE_BYTES}", 262144,
         " (256 KiB), or 0 to send every argument and result through the store"),
]
EndpointUrl = Annotated[
    str, Strict(), AfterValidator(_url), Rule("an http:// or https:// URL, or empty for AWS", "http://127.0.0.1:8333")
]
Region = Annotated[str, Strict(), AfterValidator(_region), Rule("a region name, or empty", "us-east-1")]
SecretsFile = Annotated[
    str, Strict(), AfterValidator(_secrets_file),
    Rule("a file path (relative: under $APOTHIC_HOME)", "/srv/apothic/secrets.json",
         ', or "" for $APOTHIC_HOME/secrets/secrets.json'),
]
Registry = Annotated[
    str, Strict(), AfterValidator(_registry), Rule("host:port of an image registry, or null", "127.0.0.1:5000")
]
Enabled = Annotated[Any, AfterValidator(_enabled), Rule("true, false or auto")]
MaxOffers = _count(1, 100)
SearchLimit = _count(1, 1000)

# The key payloads are signed with (APOTHIC_PAYLOAD_KEY, or the text of APOTHIC_PAYLOAD_KEY_FILE;
# apothic/_data/_signing.py). A problem never quotes the key.
PAYLOAD_KEY_MIN_BYTES = 32
PAYLOAD_KEY_ALLOWED = (
    f"the hexadecimal digits of at least {PAYLOAD_KEY_MIN_BYTES} random bytes "
    f"({2 * PAYLOAD_KEY_MIN_BYTES} or more, an even number, nothing else)"
)
PAYLOAD_KEY_MAKE = "(umask 077; python -c 'import secrets; print(secrets.token_hex(32))' > payload.key)"


def payload_key_problem(text: str) -> str:
    """What is wrong with ``text`` as a payload key, or "" (nothing)."""
    if any(c.isspace() for c in text):
        return "it has spaces or a line break"
    if not re.fullmatch(r"[0-9A-Fa-f]*", text):
        return "it has characters that are not hexadecimal digits"
    if len(text) % 2:
        return f"it has an odd number of digits ({len(text)})"
    if len(text) < 2 * PAYLOAD_KEY_MIN_BYTES:
        return f"it has {len(text)} digits ({len(text) // 2} bytes)"
    return ""


ModelUrl = Annotated[
    str, Strict(), AfterValidator(_url),
    Rule("the http:// or https:// base URL of an OpenAI-compatible API, or empty", "http://127.0.0.1:8000/v1"),
]
ModelName = Annotated[
    str, Strict(), AfterValidator(lambda v: _name(v) if v else v), Rule("a model name without spaces, or empty", "gpt-4o-mini")
]


class Report:
    """The problems found so far; raised together."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, head: str, allowed: str, fix: str, detail: str = "") -> None:
        self.lines.append(f"{head}: allowed: {allowed}{'; ' + detail if detail else ''}. Fix: {fix}.")

    def raise_if_any(self) -> None:
        if self.lines:
            n = len(self.lines)
            raise InvalidError(
                f"invalid Apothic settings ({n} problem{'s' if n > 1 else ''}):\n"
                + "\n".join(f"  - {line}" for line in self.lines)
            )


def show(value: Any) -> str:
    """``value`` as a message shows it (``repr``, shortened)."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def yaml_scalar(value: Any) -> str:
    """``value`` as one writes it in YAML (or in a variable, for numbers and strings)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if value == "":
        return '""'
    return str(value)


def unwrap(tp: Any) -> tuple[Any, Rule | None]:
    """``tp`` without ``Annotated`` and ``| None``, and the ``Rule`` it carried."""
    rule = None
    while True:
        if typing.get_origin(tp) is Annotated:
            rule = next((m for m in tp.__metadata__ if isinstance(m, Rule)), rule)
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp, rule
            tp = args[0]
        else:
            return tp, rule


@cache
def fields_of(tp: Any) -> dict[str, tuple[Any, Any]] | None:
    """Name -> (annotation, default) of a dataclass or model; None for other types."""
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        return {
            f.name: (hints[f.name], f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
            for f in dataclasses.fields(tp)
        }
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        hints = typing.get_type_hints(tp, include_extras=True)
        return {name: (hints[name], info.default) for name, info in tp.model_fields.items()}
    return None


def setting(root: Any, loc: tuple[str, ...]) -> tuple[Rule | None, Any, Any]:
    """The rule, the plain type and the default of the setting at ``loc`` under ``root``."""
    tp: Any = root
    rule: Rule | None = None
    default: Any = None
    i = 0
    while i < len(loc):
        fields = fields_of(tp)
        if fields is not None:
            if loc[i] not in fields:
                return None, None, None
            annotation, default = fields[loc[i]]
        elif typing.get_origin(tp) is dict:
            key_type, value_type = typing.get_args(tp)
            key = i + 1 < len(loc) and loc[i + 1] == "[key]"
            annotation, default = (key_type if key else value_type), None
            i += key
        else:
            break
        tp, rule = unwrap(annotation)
        i += 1
    return rule, tp, default


def fix_for(kind: str, label: str, loc: tuple[str, ...], value: Any, rule: Rule | None, tp: Any, default: Any) -> str:
    """How to correct the value at ``loc``, in the words of its source ``kind``."""
    example = yaml_scalar(rule.example if rule is not None and rule.example is not None else default)
    hint = rule.hint if rule is not None else ""
    if kind == "env":
        return f"e.g. {label}={example}{hint}, or unset {label}"
    if kind == "arg":
        return f"e.g. {label} {example}"
    where = f"in the {'.'.join(loc[:-1])} section" if len(loc) > 1 else "at the top level"
    if isinstance(value, str) and tp in (int, float, bool):
        try:
            unquoted = yaml.safe_load(value)
        except yaml.YAMLError:
            unquoted = None
        number = tp is float and isinstance(unquoted, int)
        if (isinstance(unquoted, tp) or number) and not (tp is not bool and isinstance(unquoted, bool)):
            return f'{where}, write it without quotes: "{loc[-1]}: {value}"'
    return f'{where}, write e.g. "{loc[-1]}: {example}"{hint}'


def report_errors(root: Any, e: ValidationError, report: Report, source: Any) -> None:
    """Each error of ``e`` (validating ``root``) as a line in ``report``.

    ``source(loc)`` names where the value at ``loc`` came from: ``(kind, label, shown)``, kind
    ``file`` (label: its path), ``env`` (label: the variable) or ``arg`` (label: ``--option``);
    ``shown`` replaces the value in the message (None: the value validated).
    """
    unknown: dict[tuple[str, ...], list[tuple[str, Any]]] = {}
    for err in e.errors(include_url=False):
        loc = tuple(str(p) for p in err["loc"])
        if err["type"] in ("extra_forbidden", "unexpected_keyword_argument", "invalid_key"):
            unknown.setdefault(loc[:-1], []).append((loc[-1], err["input"]))
            continue
        path = tuple(p for p in loc if p != "[key]")
        kind, label, shown = source(path)
        value = err["input"] if shown is None else shown
        rule, tp, default = setting(root, loc)
        allowed = rule.allowed if rule is not None else err["msg"]
        detail = str(err["ctx"]["error"]) if err["type"] == "value_error" else ""
        dotted = ".".join(path)
        head = f"{label}: {dotted}={show(value)}" if kind == "file" else f"{label}={show(value)} (sets {dotted})"
        if loc[-1] == "[key]":  # a key of a free-form mapping (sqlite_pragmas, dynamic_config)
            head = f"{label}: the key {dotted!r}"
            example = f" (e.g. {rule.example})" if rule is not None else ""
            report.add(head, f"{allowed}{example}", f"rename {dotted}")
            continue
        report.add(head, allowed, fix_for(kind, label, path, value, rule, tp, default), detail)
    for parent, items in unknown.items():
        kind, label, _ = source(parent)
        _, tp, _ = setting(root, parent)
        known = sorted(fields_of(tp) or {})
        section = repr(".".join(parent)) if parent else "the top level"
        names = [name for name, _ in items]
        dotted = [".".join((*parent, name)) for name in names]
        fixes = []
        for name, path in zip(names, dotted):
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            fixes.append(f"rename {path} to {'.'.join((*parent, close[0]))}" if close else f"remove {path}")
        values = ", ".join(f"{path}={show(value)}" for path, (_, value) in zip(dotted, items))
        head = f"{label}: unknown key(s) {names!r} {'in ' if parent else 'at '}{section} ({values})"
        report.add(head, ", ".join(known), "; ".join(fixes))
