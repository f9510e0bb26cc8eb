"""How the simulated server evaluates a search body: filters, virtual columns, order and limit.

This is the *server's* reading of a query, written apart from the client-side matcher in
``apothic.placement`` on purpose: the simulator is the oracle that the client is tested
against, so it must not share the client's code (a bug in one would hide in both). It follows
the server semantics of ``vast-api.md`` §2:

- a body is a flat dict ``{field: {op: value}}`` with the operators eq, neq, gt, lt, gte,
  lte, in, notin (several on one field); a bare value means ``eq``;
- values are coerced to the column's type, since the official CLI sends numbers as text
  (``num_gpus>=2`` arrives as ``{"num_gpus": {"gte": "2"}}``);
- a NULL column satisfies no comparison (as in SQL), except ``eq``/``neq`` against null;
- virtual columns: ``geolocation`` (matched on the trailing two-letter code), ``datacenter``
  (``hosting_type``), ``verified`` (``verification == "verified"``), ``duration`` (seconds
  left until ``end_date``), ``target_reliability`` and the ``*_GB`` forms (x1000 to MB);
- aliases: ``reliability2``, ``dphtotal``, ``dph``, ``gpu_totalram``, ``cuda_vers``,
  ``flops_usd``, ``dlperf_usd``, ``ubuntu_version``, ``driver_version`` (a dotted version is
  turned into the integer ``driver_vers``);
- GPU names are compared exactly, so they need spaces ("RTX 4090"), as the CLI sends them;
- an unknown field or operator is a 400 ``invalid_args`` (the real server's answer here is
  not documented).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._catalogue import driver_number

SEARCH_CONTROL = frozenset({"order", "limit", "type", "allocated_storage", "disable_bundling", "q"})
"""Keys of a search body that are not filters."""

OPERATORS = frozenset({"eq", "neq", "gt", "lt", "gte", "lte", "in", "notin"})

ALIASES = {
    "reliability2": "reliability",
    "dphtotal": "dph_total",
    "dph": "dph_total",
    "gpu_totalram": "gpu_total_ram",
    "cuda_vers": "cuda_max_good",
    "flops_usd": "flops_per_dphtotal",
    "dlperf_usd": "dlperf_per_dphtotal",
    "ubuntu_version": "os_version",
    "driver_version": "driver_vers",
}

# Columns whose value is a flag, text or may be null; every other column of a row is a number.
_BOOL_COLUMNS = frozenset({"rentable", "rented", "is_bid", "static_ip", "vms_enabled", "external",
                           "gpu_display_active", "verified", "datacenter"})


class QueryError(ValueError):
    """The body cannot be evaluated; answered as 400 ``invalid_args`` with this message."""


@dataclass(frozen=True)
class Filter:
    """One resolved condition.

    Attributes:
        name: the field as the client wrote it (for fault injection and messages).
        column: the column compared (after aliases and virtual columns).
        op: the operator.
        value: the coerced value (a list for in/notin).
        kind: "number", "bool", "str" or "country".
    """

    name: str
    column: str
    op: str
    value: Any
    kind: str

    def holds(self, row: Mapping[str, Any], now: float) -> bool:
        if self.kind == "country":
            have = _country(row.get("geolocation"))
        elif self.column == "duration":
            end = row.get("end_date")
            have = None if end is None else end - now
        elif self.column == "datacenter":
            have = None if row.get("hosting_type") is None else row.get("hosting_type") == 1
        elif self.column == "verified":
            have = None if row.get("verification") is None else row.get("verification") == "verified"
        else:
            have = row.get(self.column)
        op, want = self.op, self.value
        if want is None and op in ("eq", "neq"):
            return (have is None) == (op == "eq")
        if have is None:
            return op == "in" and None in want
        if op == "in":
            return have in want
        if op == "notin":
            return have not in want
        if op == "eq":
            return have == want
        if op == "neq":
            return have != want
        if isinstance(have, str) != isinstance(want, str):
            return False
        try:
            if op == "gt":
                return have > want
            if op == "gte":
                return have >= want
            if op == "lt":
                return have < want
            return have <= want
        except TypeError:
            return False


def _country(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    tail = text.rsplit(",", 1)[-1].strip()
    return tail.upper() if len(tail) == 2 and tail.isalpha() else None


def _coerce(kind: str, value: Any, where: str) -> Any:
    if value is None:
        return None
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        raise QueryError(f"{where}: {value!r} is not a boolean")
    if kind == "number":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, (int, float)):
            if isinstance(value, float) and math.isnan(value):
                raise QueryError(f"{where}: NaN is not a number")
            return value
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise QueryError(f"{where}: {value!r} is not a number")
    if kind == "country":
        if isinstance(value, str) and len(value.strip()) == 2 and value.strip().isalpha():
            return value.strip().upper()
        raise QueryError(f"{where}: {value!r} is not a two-letter country code")
    if isinstance(value, (dict, list)):
        raise QueryError(f"{where}: {value!r} is not a string")
    return str(value) if not isinstance(value, str) else value


def _kind_of(column: str, sample: Mapping[str, Any]) -> str:
    if column in _BOOL_COLUMNS:
        return "bool"
    value = sample.get(column)
    if isinstance(value, str):
        return "str"
    return "number"


def parse_filters(body: Mapping[str, Any], *, columns: Mapping[str, Any], control: Iterable[str],
                  virtual: bool = True) -> list[Filter]:
    """Resolve the filters of a search body.

    Args:
        body: the decoded JSON body.
        columns: a sample row; its keys are the columns that may be filtered.
        control: keys that are not filters (``order``, ``limit``, ...); skipped.
        virtual: whether the offer virtual columns (geolocation, datacenter, ...) apply.

    Raises:
        QueryError: unknown field or operator, or a value of the wrong type.
    """
    skip = set(control)
    filters: list[Filter] = []
    for name, spec in body.items():
        if name in skip:
            continue
        column, factor = name, 1.0
        if column in ALIASES:
            column = ALIASES[column]
        elif column.endswith("_GB") and column[:-3] in columns:
            column, factor = column[:-3], 1000.0
        elif column == "target_reliability":
            column = "reliability"
        elif column == "id" and "ask_contract_id" in columns:
            column = "id"
        if virtual and column == "geolocation":
            kind = "country"
        elif virtual and column in ("datacenter", "verified"):
            kind = "bool"
        elif virtual and column == "duration" and "end_date" in columns:
            kind = "number"
        elif column in columns:
            kind = _kind_of(column, columns)
        else:
            raise QueryError(f"Unknown search field {name!r}")
        ops = spec if isinstance(spec, Mapping) else {"eq": spec}
        for op, raw in ops.items():
            if op not in OPERATORS:
                raise QueryError(f"{name}: unknown operator {op!r}; use one of {sorted(OPERATORS)}")
            if kind == "country" and op not in ("eq", "neq", "in", "notin"):
                raise QueryError(f"{name}: only eq, neq, in and notin apply to a country code")
            where = f"{name}.{op}"
            if op in ("in", "notin"):
                items = raw if isinstance(raw, (list, tuple)) else [raw]
                value: Any = [_fix(column, kind, v, factor, where) for v in items]
            else:
                value = _fix(column, kind, raw, factor, where)
            filters.append(Filter(name, column, op, value, kind))
    return filters


def _fix(column: str, kind: str, raw: Any, factor: float, where: str) -> Any:
    if column == "driver_vers" and isinstance(raw, str) and "." in raw:
        try:
            return driver_number(raw)
        except ValueError:
            raise QueryError(f"{where}: {raw!r} is not a driver version") from None
    value = _coerce(kind, raw, where)
    if factor != 1.0 and value is not None:
        value = value * factor
    return value


def parse_order(order: Any, columns: Mapping[str, Any], default: list[list[str]]) -> list[tuple[str, bool]]:
    """Resolve ``order`` (a list of ``[field, "asc"|"desc"]``) into (column, descending) pairs.

    Raises:
        QueryError: not a list of pairs, an unknown field, or a direction other than asc/desc.
    """
    if order is None:
        order = default
    if not isinstance(order, list):
        raise QueryError(f"order must be a list of [field, 'asc'|'desc'], got {order!r}")
    out = []
    for item in order:
        if isinstance(item, str):
            item = [item, "asc"]
        if not isinstance(item, (list, tuple)) or not item or len(item) > 2:
            raise QueryError(f"order entry {item!r} is not [field, 'asc'|'desc']")
        column = ALIASES.get(item[0], item[0])
        direction = str(item[1]).lower() if len(item) == 2 else "asc"
        if column not in columns:
            raise QueryError(f"order: unknown field {item[0]!r}")
        if direction not in ("asc", "desc"):
            raise QueryError(f"order: direction must be 'asc' or 'desc', got {item[1]!r}")
        out.append((column, direction == "desc"))
    return out


def sort_rows(rows: list[dict[str, Any]], order: list[tuple[str, bool]], tie: str = "id") -> list[dict[str, Any]]:
    """Sort rows by ``order``; nulls last whatever the direction, then by ``tie`` ascending."""
    rows = sorted(rows, key=lambda r: (r.get(tie) is None, r.get(tie)))
    for column, desc in reversed(order):
        present = [r for r in rows if r.get(column) is not None]
        missing = [r for r in rows if r.get(column) is None]
        present.sort(key=lambda r: r[column], reverse=desc)
        rows = present + missing
    return rows


def select(rows: Iterable[dict[str, Any]], filters: list[Filter], now: float,
           ignored: Callable[[Filter], bool] = lambda f: False) -> list[dict[str, Any]]:
    """The rows that satisfy every filter not ``ignored``."""
    active = [f for f in filters if not ignored(f)]
    return [r for r in rows if all(f.holds(r, now) for f in active)]
