"""`compile_filters`: validate a function's placement options into one `OfferQuery`."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

from ._consistency import find_conflicts
from ._errors import FilterError, FilterProblem
from ._fields import (
    ALIASES, FIELD_SPECS, LOCAL_ONLY_FIELDS, OP_SYNONYMS, OPERATORS, ORDER_OPS, SET_OPS,
    VRAM_TOLERANCE, FieldSpec, canonical_gpu_name, gpu_key, is_country_code,
)
from ._query import Constraint, OfferQuery

# Named "min_*" options: API field, factor from the option's unit to the API's, unit text.
_MINIMUMS: dict[str, tuple[str, float, str]] = {
    "min_total_flops": ("total_flops", 1.0, "TFLOPS"),
    "min_gpu_ram_bandwidth_gbps": ("gpu_mem_bw", 1.0, "GB/s"),
    "min_cpu_cores": ("cpu_cores_effective", 1.0, "vCPUs"),
    "min_cpu_ram_gb": ("cpu_ram_effective", 1000.0, "GB"),
    "min_cpu_ghz": ("cpu_ghz", 1.0, "GHz"),
    "min_disk_bandwidth_mb_s": ("disk_bw", 1.0, "MB/s"),
    "min_internet_upload_mbps": ("inet_up", 1.0, "Mbit/s"),
    "min_internet_download_mbps": ("inet_down", 1.0, "Mbit/s"),
}

# Option names people put into offer_filters by mistake -> the API field to use instead.
_OPTION_FIELDS = {"gpu": "gpu_name", "gpu_count": "num_gpus", "min_vram_gb": "gpu_ram",
                  "max_cost_per_hour_usd": "dph_total", "secure_cloud_only": "datacenter",
                  "max_cost_per_tflop_hour_usd": "flops_per_dphtotal",
                  **{name: field for name, (field, _, _) in _MINIMUMS.items()}}

# Other names of a value: what Vast calls it.
_SPELLINGS = {"x86_64": "amd64", "x86-64": "amd64", "x64": "amd64", "aarch64": "arm64", "arm": "arm64"}

_MB_FIELDS = frozenset({"gpu_ram", "gpu_total_ram", "cpu_ram"})


def vram_gb_to_mb(gb: float) -> int:
    """MB lower bound for ``min_vram_gb``: ``floor(gb * 1024 * 0.93)`` (10 GB -> 9523 MB)."""
    return math.floor(gb * 1024 * (1 - VRAM_TOLERANCE))


def compile_filters(
    *,
    gpu: str | list[str] | None = None,
    gpu_count: int | None = None,
    min_vram_gb: float | None = None,
    geolocation: str | list[str] | None = None,
    max_cost_per_hour_usd: float | None = None,
    max_cost_per_tflop_hour_usd: float | None = None,
    min_total_flops: float | None = None,
    min_gpu_ram_bandwidth_gbps: float | None = None,
    min_cpu_cores: float | None = None,
    min_cpu_ram_gb: float | None = None,
    min_cpu_ghz: float | None = None,
    min_disk_bandwidth_mb_s: float | None = None,
    min_internet_upload_mbps: float | None = None,
    min_internet_download_mbps: float | None = None,
    secure_cloud_only: bool | None = None,
    offer_filters: Mapping[str, Mapping[str, Any]] | None = None,
) -> OfferQuery:
    """Validate the placement options of a function and compile them into one query.

    ``None`` leaves an option unset. Named options and their constraints:

    - ``gpu``: GPU model or list of models, ``_`` or spaces, any case ("rtx_4090").
      -> ``gpu_name in [...]`` in Vast's spelling ("RTX 4090").
    - ``gpu_count``: integer >= 1 -> ``num_gpus == n``.
    - ``min_vram_gb``: **GB** per GPU, >= 0 -> ``gpu_ram >= floor(GB * 1024 * 0.93)`` MB; the
      7 % allows for memory the driver does not report (a 24 GB card reports 24564 MB).
    - ``geolocation``: two-letter country code or list of them -> ``geolocation`` eq / in;
      matches offers whose location text ends in the code ("Washington, US").
    - ``max_cost_per_hour_usd``: USD/hour, >= 0 -> ``dph_total <= x``.
    - ``max_cost_per_tflop_hour_usd``: USD per TFLOPS-hour, > 0 -> ``flops_per_dphtotal >= 1/x``.
    - ``min_total_flops`` (TFLOPS, all GPUs) -> ``total_flops``; ``min_gpu_ram_bandwidth_gbps``
      (GB/s) -> ``gpu_mem_bw``; ``min_cpu_cores`` (vCPUs you get) -> ``cpu_cores_effective``;
      ``min_cpu_ghz`` -> ``cpu_ghz``; ``min_disk_bandwidth_mb_s`` -> ``disk_bw``;
      ``min_internet_upload_mbps`` / ``min_internet_download_mbps`` (Mbit/s) -> ``inet_up`` /
      ``inet_down``; each ``>=`` and each >= 0.
    - ``min_cpu_ram_gb``: **GB of RAM you get** (not the host's) -> local ``cpu_ram_effective
      >= GB*1000`` MB; the Vast search sends it as ``cpu_ram >= GB*1000`` (host RAM).
    - ``secure_cloud_only=True`` -> ``datacenter == true``; ``False`` adds nothing.

    ``offer_filters`` maps a Vast API field name to ``{op: value}`` with ops eq, neq, gt, lt,
    gte, lte, in, notin, in the **API's units** (``gpu_ram`` and ``cpu_ram`` are MB,
    ``dph_total`` USD/hour). in/notin take a list; ordering ops take numbers and only apply
    to number fields; ``gpu_name`` values are normalised like ``gpu``; ``geolocation`` values
    must be two-letter codes.

    Returns:
        The query: named options first, then ``offer_filters`` in the order given.

    Raises:
        FilterError: listing every problem found: unknown field or operator (with close
            matches), wrong value type, negative or impossible value, and filters that
            contradict each other (also a named option against an ``offer_filters`` entry).
    """
    b = _Builder()
    b.gpu(gpu)
    if gpu_count is not None and b.integer("gpu_count", gpu_count, low=1):
        b.add("num_gpus", "eq", int(gpu_count), "gpu_count")
    if min_vram_gb is not None and b.number("min_vram_gb", min_vram_gb, unit="GB per GPU"):
        b.add("gpu_ram", "gte", vram_gb_to_mb(min_vram_gb), "min_vram_gb")
    b.geolocation(geolocation)
    if max_cost_per_hour_usd is not None and b.number("max_cost_per_hour_usd", max_cost_per_hour_usd,
                                                      unit="USD/hour"):
        b.add("dph_total", "lte", max_cost_per_hour_usd, "max_cost_per_hour_usd")
    x = max_cost_per_tflop_hour_usd
    if x is not None and b.number("max_cost_per_tflop_hour_usd", x, unit="USD per TFLOPS-hour", positive=True):
        b.add("flops_per_dphtotal", "gte", 1.0 / x, "max_cost_per_tflop_hour_usd")
    named = {"min_total_flops": min_total_flops, "min_gpu_ram_bandwidth_gbps": min_gpu_ram_bandwidth_gbps,
             "min_cpu_cores": min_cpu_cores, "min_cpu_ram_gb": min_cpu_ram_gb, "min_cpu_ghz": min_cpu_ghz,
             "min_disk_bandwidth_mb_s": min_disk_bandwidth_mb_s,
             "min_internet_upload_mbps": min_internet_upload_mbps,
             "min_internet_download_mbps": min_internet_download_mbps}
    for name, value in named.items():
        field, factor, unit = _MINIMUMS[name]
        if value is not None and b.number(name, value, unit=unit):
            b.add(field, "gte", value * factor if factor != 1.0 else value, name)
    if secure_cloud_only is not None:
        if not isinstance(secure_cloud_only, bool):
            b.problem(("secure_cloud_only",), secure_cloud_only, "True, False or None",
                      "Write secure_cloud_only=True to rent only datacenter (secure cloud) machines.",
                      "Must be a bool.")
        elif secure_cloud_only:
            b.add("datacenter", "eq", True, "secure_cloud_only")
    b.offer_filters(offer_filters)
    problems = b.problems + find_conflicts(b.constraints)
    if problems:
        raise FilterError(problems)
    return OfferQuery(tuple(b.constraints))


def _is_number(value: Any) -> bool:
    """A finite int or float within float range (not a bool): what an offer field can compare to."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int too large for a float
        return False


class _Builder:
    """Collects constraints and problems; each check returns whether the value was valid."""

    def __init__(self) -> None:
        self.constraints: list[Constraint] = []
        self.problems: list[FilterProblem] = []

    def add(self, field: str, op: str, value: Any, source: str) -> None:
        self.constraints.append(Constraint(field, op, value, source))

    def problem(self, loc: tuple[str, ...], value: Any, allowed: str, fix: str, message: str) -> None:
        self.problems.append(FilterProblem(loc, value, allowed, fix, message))

    # --- named options ---------------------------------------------------------------

    def number(self, name: str, value: Any, *, unit: str, positive: bool = False) -> bool:
        bound = "> 0" if positive else ">= 0"
        allowed = f"a finite number {bound} ({unit})"
        if not _is_number(value) or not math.isfinite(value):
            self.problem((name,), value, allowed, f"Write {name}=<number> in {unit}, or leave it None for no limit.",
                         "Must be a finite number.")
            return False
        if value < 0 or (positive and value == 0):
            self.problem((name,), value, allowed, f"Use a value {bound} in {unit}, or None for no limit.",
                         "No offer can satisfy this value.")
            return False
        return True

    def integer(self, name: str, value: Any, *, low: int) -> bool:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            self.problem((name,), value, f"an integer >= {low}",
                         f"Write {name}=1 (or more) for GPUs per machine; leave it None for any count.",
                         "Must be a whole number of GPUs, at least 1.")
            return False
        return True

    def _names(self, name: str, value: Any, what: str) -> list[str] | None:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            self.problem((name,), value, f"a {what} or a list of them", f"Write {name}=[...] with {what}s.",
                         "Must be a string or a list of strings.")
            return None
        if not items:
            self.problem((name,), value, f"a non-empty list of {what}s",
                         f"Leave {name}=None to allow any, or list at least one {what}.",
                         "An empty list matches no offer.")
            return None
        good = []
        for i, item in enumerate(items):
            loc = (name,) if isinstance(value, str) else (name, str(i))
            if not isinstance(item, str) or not item.strip():
                self.problem(loc, item, f"a non-empty {what}", f"Write the {what} as text.", "Must be non-empty text.")
            else:
                good.append(item)
        return good if len(good) == len(items) else None

    def gpu(self, value: Any) -> None:
        if value is None:
            return
        names = self._names("gpu", value, "GPU name such as 'RTX_4090'")
        if names is not None:
            canon = _dedupe([canonical_gpu_name(n) for n in names], gpu_key)
            self.add("gpu_name", "in", tuple(canon), "gpu")

    def geolocation(self, value: Any) -> None:
        if value is None:
            return
        codes = self._names("geolocation", value, "two-letter country code")
        if codes is None:
            return
        bad = False
        for i, code in enumerate(codes):
            if not is_country_code(code):
                bad = True
                loc = ("geolocation",) if isinstance(value, str) else ("geolocation", str(i))
                self.problem(loc, code, "a two-letter country code such as 'US', 'CA', 'DE'",
                             _code_fix("geolocation", code), "Not a two-letter country code.")
        if bad:
            return
        upper = _dedupe([c.strip().upper() for c in codes], lambda c: c)
        if isinstance(value, str):
            self.add("geolocation", "eq", upper[0], "geolocation")
        else:
            self.add("geolocation", "in", tuple(upper), "geolocation")

    # --- offer_filters ---------------------------------------------------------------

    def offer_filters(self, filters: Any) -> None:
        if filters is None:
            return
        if not isinstance(filters, Mapping):
            self.problem(("offer_filters",), filters, "a dict of field -> {op: value}",
                         "Write offer_filters={'gpu_ram': {'gte': 10000}}.", "Must be a dict.")
            return
        for field, ops in filters.items():
            loc = ("offer_filters", str(field))
            if not isinstance(field, str) or field not in FIELD_SPECS:
                self.problem(loc, field, "a Vast offer field name such as gpu_ram, num_gpus, dph_total",
                             _field_fix(field), "Unknown offer field.")
                continue
            if not isinstance(ops, Mapping) or not ops:
                self.problem(loc, ops, "a non-empty dict of op -> value, ops: " + ", ".join(sorted(OPERATORS)),
                             f"Write {{'{field}': {{'gte': ...}}}} or remove the field.",
                             "Each field takes a dict of operators.")
                continue
            for op, value in ops.items():
                self._filter(field, op, value)

    def _filter(self, field: str, op: Any, value: Any) -> None:
        loc = ("offer_filters", field, str(op))
        spec = FIELD_SPECS[field]
        if op not in OPERATORS:
            self.problem(loc, op, ", ".join(sorted(OPERATORS)), _op_fix(op), "Unknown operator.")
            return
        source = ".".join(loc)
        if op in ORDER_OPS and spec.kind not in ("number", "int"):
            self.problem(loc, value, f"eq, neq, in or notin ({field} is {spec.allowed_text()})",
                         f"Use eq/neq/in/notin on {field}; {op} compares numbers only.",
                         "Ordering operators need a number field.")
            return
        if op in SET_OPS:
            if not isinstance(value, (list, tuple, set, frozenset)):
                self.problem(loc, value, f"a list, each {spec.allowed_text()}",
                             f"Write {{'{op}': [{value!r}]}} or use {'eq' if op == 'in' else 'neq'} for one value.",
                             f"'{op}' takes a list.")
                return
            items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else list(value)
            if op == "in" and not items:
                self.problem(loc, value, f"a non-empty list, each {spec.allowed_text()}",
                             f"List at least one value, or remove the '{field}' filter.",
                             "An empty 'in' list matches no offer.")
                return
            clean = [self._scalar(loc + (str(i),), field, spec, op, v) for i, v in enumerate(items)]
            if all(c is not _BAD for c in clean):
                key = gpu_key if field == "gpu_name" else (lambda v: v)
                self.add(field, op, tuple(_dedupe(clean, key)), source)
            return
        clean_value = self._scalar(loc, field, spec, op, value)
        if clean_value is not _BAD:
            self.add(field, op, clean_value, source)

    def _scalar(self, loc: tuple[str, ...], field: str, spec: FieldSpec, op: str, value: Any) -> Any:
        """Validate one value of a filter; return it normalised, or ``_BAD``."""
        allowed = spec.allowed_text()
        if spec.kind == "bool":
            if isinstance(value, bool):
                return value
            self.problem(loc, value, allowed, f"Write True or False for {field}.", "Must be a bool.")
            return _BAD
        if spec.kind == "str":
            if not isinstance(value, str) or not value.strip():
                self.problem(loc, value, allowed, f"Write {field} values as text.", "Must be non-empty text.")
                return _BAD
            if field == "gpu_name":
                return canonical_gpu_name(value)
            if field == "geolocation":
                if not is_country_code(value):
                    self.problem(loc, value, "a two-letter country code such as 'US'", _code_fix(field, value),
                                 "Not a two-letter country code.")
                    return _BAD
                return value.strip().upper()
            if spec.choices is not None:
                low = value.strip().lower()
                if low not in spec.choices:
                    close = [_SPELLINGS[low]] if low in _SPELLINGS else difflib.get_close_matches(
                        low, sorted(spec.choices), n=1, cutoff=0.5)
                    fix = f"Did you mean {close[0]!r}?" if close else f"Use {allowed}."
                    self.problem(loc, value, allowed, fix, f"Not a value {field} takes.")
                    return _BAD
                return low
            return value
        if not _is_number(value) or not math.isfinite(value):
            self.problem(loc, value, allowed, f"Write a number in {spec.unit or 'the API unit'}.",
                         "Must be a finite number.")
            return _BAD
        if value < spec.low or (spec.high is not None and value > spec.high):
            self.problem(loc, value, allowed, f"Use a value within {allowed}.", f"{field} never takes this value.")
            return _BAD
        if spec.kind == "int" and op not in ORDER_OPS and not float(value).is_integer():
            self.problem(loc, value, allowed, "Use a whole number, or gte/lte for a range.",
                         f"{field} is always a whole number.")
            return _BAD
        if field in _MB_FIELDS and 0 < value < 256:
            self.problem(loc, value, f"{allowed}; {field} is MB, so {value} means {value} MB",
                         f"Write {field} in MB ({value} GB is {value * 1000:g} MB)"
                         + (", or use min_vram_gb for GB." if field == "gpu_ram" else "."),
                         "This looks like GB, but the field is MB.")
            return _BAD
        return value


_BAD = object()


def _dedupe(items: list[Any], key: Any) -> list[Any]:
    seen, out = set(), []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
    return out


def _field_fix(field: Any) -> str:
    if not isinstance(field, str):
        return "Field names are text, e.g. 'gpu_ram'."
    if field in ALIASES:
        return f"Write '{ALIASES[field]}' (the canonical name of '{field}')."
    if field in _OPTION_FIELDS:
        return (f"'{field}' is an option of @app.function, not an API field: pass {field}=... directly,"
                f" or filter '{_OPTION_FIELDS[field]}' in the API's units.")
    if field in LOCAL_ONLY_FIELDS:
        return "Use min_cpu_ram_gb=... for the RAM you get, or 'cpu_ram' (host RAM, MB)."
    close = difflib.get_close_matches(field, list(FIELD_SPECS), n=3, cutoff=0.6)
    if close:
        return "Did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "Use a Vast offer field such as gpu_ram, num_gpus, dph_total, reliability, verification, cpu_arch."


def _op_fix(op: Any) -> str:
    if isinstance(op, str) and op.strip().lower() in OP_SYNONYMS:
        return f"Write '{OP_SYNONYMS[op.strip().lower()]}' instead of {op!r}."
    close = difflib.get_close_matches(str(op), sorted(OPERATORS), n=2, cutoff=0.5)
    if close:
        return "Did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "Use one of " + ", ".join(sorted(OPERATORS)) + "."


def _code_fix(name: str, value: Any) -> str:
    if isinstance(value, str) and "," in value:
        return f"Write one code per list item: {name}=[" + ", ".join(
            repr(p.strip().upper()) for p in value.split(",") if p.strip()) + "]."
    return f"Use the ISO 3166 two-letter code, e.g. {name}='US' or {name}=['US', 'CA']."
