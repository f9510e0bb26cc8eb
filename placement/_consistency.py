"""Find filters that contradict each other, so that no offer at all could match them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from ._errors import FilterProblem
from ._fields import FieldSpec, gpu_key, spec_for
from ._query import Constraint


def find_conflicts(constraints: Iterable[Constraint]) -> list[FilterProblem]:
    """Return one problem per field whose constraints leave no possible value."""
    by_field: dict[str, list[Constraint]] = {}
    for c in constraints:
        by_field.setdefault(c.field, []).append(c)
    problems = []
    for field, group in by_field.items():
        spec = spec_for(field)
        if spec.kind in ("number", "int"):
            culprits = _numeric_conflict(spec, group)
        else:
            culprits = _discrete_conflict(field, spec, group)
        if culprits is not None:
            problems.append(_problem(field, spec, culprits))
    return problems


def _numeric_conflict(spec: FieldSpec, group: Sequence[Constraint]) -> list[Constraint | str] | None:
    lo: tuple[float, bool, Constraint | str] = (spec.low, False, f"{spec.low:g} is the smallest possible value")
    hi_value = math.inf if spec.high is None else spec.high
    hi: tuple[float, bool, Constraint | str] = (hi_value, False, f"{hi_value:g} is the largest possible value")
    candidates: set[Any] | None = None
    picked: list[Constraint] = []
    excluded: set[Any] = set()
    excluders: list[Constraint] = []
    for c in group:
        if c.op in ("gte", "gt"):
            strict = c.op == "gt"
            if c.value > lo[0] or (c.value == lo[0] and strict and not lo[1]):
                lo = (c.value, strict, c)
        elif c.op in ("lte", "lt"):
            strict = c.op == "lt"
            if c.value < hi[0] or (c.value == hi[0] and strict and not hi[1]):
                hi = (c.value, strict, c)
        elif c.op in ("eq", "in"):
            values = {c.value} if c.op == "eq" else set(c.value)
            candidates = values if candidates is None else candidates & values
            picked.append(c)
        else:
            excluded |= {c.value} if c.op == "neq" else set(c.value)
            excluders.append(c)

    def inside(v: float) -> bool:
        above = v > lo[0] if lo[1] else v >= lo[0]
        below = v < hi[0] if hi[1] else v <= hi[0]
        return above and below and (spec.kind != "int" or float(v).is_integer())

    bounds = [lo[2], hi[2]]
    if candidates is not None:
        if any(inside(v) and v not in excluded for v in candidates):
            return None
        culprits: list[Constraint | str] = list(picked)
        if any(v < lo[0] or (lo[1] and v == lo[0]) for v in candidates):
            culprits.append(lo[2])
        if any(v > hi[0] or (hi[1] and v == hi[0]) for v in candidates):
            culprits.append(hi[2])
        if candidates & excluded:
            culprits.extend(excluders)
        return culprits
    if spec.kind == "int":
        first = math.floor(lo[0]) + 1 if lo[1] or not float(lo[0]).is_integer() else int(lo[0])
        if math.isinf(hi[0]):
            return None
        last = math.ceil(hi[0]) - 1 if hi[1] or not float(hi[0]).is_integer() else int(hi[0])
        if first > last:
            return bounds
        if last - first < len(excluded) and all(v in excluded for v in range(first, last + 1)):
            return [*bounds, *excluders]
        return None
    if lo[0] > hi[0] or (lo[0] == hi[0] and (lo[1] or hi[1])):
        return bounds
    if lo[0] == hi[0] and lo[0] in excluded:
        return [*bounds, *excluders]
    return None


def _discrete_conflict(field: str, spec: FieldSpec, group: Sequence[Constraint]) -> list[Constraint | str] | None:
    def key(v: Any) -> Any:
        return gpu_key(v) if field == "gpu_name" and isinstance(v, str) else v

    if spec.kind == "bool":
        candidates: set[Any] | None = {True, False}
    elif spec.choices:
        candidates = set(spec.choices)
    else:
        candidates = None
    domain_note = f"{field} is {spec.allowed_text()}" if candidates is not None else None
    picked: list[Constraint] = []
    excluded: set[Any] = set()
    excluders: list[Constraint] = []
    for c in group:
        values = {key(c.value)} if c.op in ("eq", "neq") else {key(v) for v in c.value}
        if c.op in ("eq", "in"):
            candidates = values if candidates is None else candidates & values
            picked.append(c)
        else:
            excluded |= values
            excluders.append(c)
    if candidates is None or candidates - excluded:
        return None
    culprits: list[Constraint | str] = [*picked, *excluders]
    if domain_note is not None and not picked:
        culprits.append(domain_note)
    return culprits


def _problem(field: str, spec: FieldSpec, culprits: Sequence[Constraint | str]) -> FilterProblem:
    seen: list[Constraint] = []
    notes: list[str] = []
    for item in culprits:
        if isinstance(item, Constraint):
            if item not in seen:
                seen.append(item)
        elif item not in notes:
            notes.append(item)
    from_filters = any(c.source.startswith("offer_filters.") for c in seen)
    loc = ("offer_filters", field) if from_filters or not seen else (seen[0].source,)
    parts = [f"{c.source} ({c})" for c in seen] + notes
    fix = "Relax or remove one of: " + ", ".join(c.source for c in seen) + "."
    if any(c.source == "min_vram_gb" for c in seen) and from_filters:
        fix += (" Note min_vram_gb is GB per GPU (becomes gpu_ram >= GB*1024*0.93 MB) while"
                " offer_filters gpu_ram is MB per GPU.")
    return FilterProblem(
        loc=loc,
        value={c.source: c.value for c in seen},
        allowed=f"filters on {field} that leave at least one possible value ({spec.allowed_text()})",
        fix=fix,
        message="These filters contradict each other, so no offer could match: " + "; ".join(parts) + ".",
    )
