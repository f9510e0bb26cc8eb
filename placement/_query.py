"""`Constraint` and `OfferQuery`: the compiled placement filters, and how one offer is tested."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ._fields import FIELD_SPECS, LOCAL_ONLY_FIELDS, country_code, gpu_key
from ._offer import Offer

_SYMBOL = {"eq": "==", "neq": "!=", "gt": ">", "lt": "<", "gte": ">=", "lte": "<=", "in": "in",
           "notin": "not in"}

# Defaults of the Vast SDK's search_offers (vast-api.md section 2), each skipped when the
# query itself filters the field (or, for `verified`, the `verification` field).
_VAST_DEFAULTS: tuple[tuple[str, bool, frozenset[str]], ...] = (
    ("verified", True, frozenset({"verified", "verification"})),
    ("external", False, frozenset({"external"})),
    ("rentable", True, frozenset({"rentable"})),
    ("rented", False, frozenset({"rented"})),
)

# What a machine without a GPU reports, to decide whether a query needs a GPU.
_NO_GPU = {"num_gpus": 0, "gpu_ram": 0, "gpu_total_ram": 0, "gpu_name": "", "total_flops": 0,
           "flops_per_dphtotal": 0, "gpu_mem_bw": 0, "compute_cap": 0, "cuda_max_good": 0}


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.6g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _kind(field: str, target: Any) -> str:
    spec = FIELD_SPECS.get(field) or LOCAL_ONLY_FIELDS.get(field)
    if spec is not None:
        return spec.kind
    sample = target[0] if isinstance(target, tuple) and target else target
    if isinstance(sample, bool):
        return "bool"
    if isinstance(sample, (int, float)):
        return "number"
    return "str"


def _comparable(field: str, kind: str, value: Any) -> Any:
    """Bring an offer value or target into the form compared; ``None`` when not comparable."""
    if value is None:
        return None
    if field == "gpu_name":
        return gpu_key(value) if isinstance(value, str) else None
    if field == "geolocation":
        return country_code(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        return bool(value) if isinstance(value, int) and value in (0, 1) else None
    if kind in ("number", "int"):
        if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
            return value
        return None
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Constraint:
    """One condition on one offer field.

    Attributes:
        field: Vast API field name (or the local-only ``cpu_ram_effective``), in API units.
        op: one of eq, neq, gt, lt, gte, lte, in, notin.
        value: a number, str or bool; a tuple of them for in/notin.
        source: the SDK option it came from: ``"min_vram_gb"`` or ``"offer_filters.gpu_ram.gte"``.
    """

    field: str
    op: str
    value: Any
    source: str

    def __str__(self) -> str:
        spec = FIELD_SPECS.get(self.field) or LOCAL_ONLY_FIELDS.get(self.field)
        unit = f" {spec.unit}" if spec is not None and spec.unit else ""
        return f"{self.field} {_SYMBOL.get(self.op, self.op)} {_fmt(self.value)}{unit}"

    def holds_for(self, value: Any) -> bool:
        """Whether a raw field value satisfies this constraint.

        A missing (``None``) or incomparable value never satisfies any constraint, not even
        neq/notin: a filter is only met when the offer shows that it is.
        """
        kind = _kind(self.field, self.value)
        have = _comparable(self.field, kind, value)
        if have is None:
            return False
        op, target = self.op, self.value
        if op in ("in", "notin"):
            keys = {_comparable(self.field, kind, t) for t in target}
            return (have in keys) == (op == "in")
        want = _comparable(self.field, kind, target)
        if want is None:
            return False
        if op == "eq":
            return have == want
        if op == "neq":
            return have != want
        if isinstance(have, str) or isinstance(want, str):
            return False
        if op == "gte":
            return have >= want
        if op == "gt":
            return have > want
        if op == "lte":
            return have <= want
        if op == "lt":
            return have < want
        return False

    def accepts(self, offer: Offer) -> bool:
        """Whether ``offer`` satisfies this constraint (see :meth:`holds_for`)."""
        return self.holds_for(offer.field(self.field))


@dataclass(frozen=True)
class OfferQuery:
    """Compiled placement filters: an offer matches when it satisfies every constraint.

    Build one with :func:`compile_filters`, which validates; constructing it directly does not.

    Attributes:
        constraints: the constraints, in the order of the SDK options that produced them.
    """

    constraints: tuple[Constraint, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "constraints", tuple(self.constraints))

    def __str__(self) -> str:
        if not self.constraints:
            return "any offer"
        return "; ".join(f"{c.source}: {c}" for c in self.constraints)

    @property
    def is_empty(self) -> bool:
        """True when the query has no constraint, so every offer matches."""
        return not self.constraints

    @property
    def wants_gpu(self) -> bool:
        """True when a machine without a GPU cannot satisfy the query's GPU constraints."""
        return any(c.field in _NO_GPU and not c.holds_for(_NO_GPU[c.field]) for c in self.constraints)

    def to_vast_body(self, *, limit: int | None = None) -> dict[str, Any]:
        """Return the JSON body for Vast's ``POST /api/v0/bundles/`` search.

        The body uses the API's names and units, GPU names with spaces, Vast's SDK defaults
        (``verified`` true, ``external`` false, ``rentable`` true, ``rented`` false; each left
        out when the query filters that field), ``order`` cheapest first and ``type``
        ``"on-demand"``. Several constraints on one field and operator are merged (tightest
        bound, intersected ``in``, united ``notin``). ``cpu_ram_effective`` is sent as a
        looser ``cpu_ram`` (host RAM) lower bound. The server may not honour every filter:
        re-check each returned offer with :func:`matches`.

        Args:
            limit: maximum number of offers to ask for; omitted when ``None``.
        """
        filtered = {c.field for c in self.constraints}
        body: dict[str, Any] = {}
        for name, value, covered_by in _VAST_DEFAULTS:
            if not filtered & covered_by:
                body[name] = {"eq": value}
        merged: dict[str, dict[str, Any]] = {}
        for c in self.constraints:
            field, op, value = c.field, c.op, c.value
            if field in LOCAL_ONLY_FIELDS:
                if field != "cpu_ram_effective" or op not in ("gte", "gt"):
                    continue
                field = "cpu_ram"
            _merge(merged.setdefault(field, {}), op, value)
        for field, ops in merged.items():
            body[field] = {op: list(v) if isinstance(v, tuple) else v for op, v in ops.items()}
        body["order"] = [["dph_total", "asc"]]
        body["type"] = "on-demand"
        if limit is not None:
            body["limit"] = int(limit)
        return body


def _merge(ops: dict[str, Any], op: str, value: Any) -> None:
    if op == "neq" and ("neq" in ops or "notin" in ops):
        previous = ops.pop("neq", None)
        extra = () if previous is None else (previous,)
        value, op = extra + (value,), "notin"
    if op not in ops:
        ops[op] = value
    elif op in ("gte", "gt"):
        ops[op] = max(ops[op], value)
    elif op in ("lte", "lt"):
        ops[op] = min(ops[op], value)
    elif op == "in":
        ops[op] = tuple(v for v in ops[op] if v in value)
    elif op == "notin":
        ops[op] = ops[op] + tuple(v for v in value if v not in ops[op])
    # eq: compile_filters has rejected two different values; the first stands.
