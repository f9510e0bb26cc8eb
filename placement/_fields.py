"""The offer fields a filter may name, their kinds, units and limits; name normalisation.

Field names are the Vast.ai offer API's own (``gpu_ram``, ``dph_total``, ...) in the API's
units, so that a filter can be sent to ``POST /api/v0/bundles/`` unchanged. One extra field,
``cpu_ram_effective``, exists only locally (see :data:`LOCAL_ONLY_FIELDS`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

OPERATORS: frozenset[str] = frozenset({"eq", "neq", "gt", "lt", "gte", "lte", "in", "notin"})
"""The operators an ``offer_filters`` entry may use (the Vast API's set)."""

ORDER_OPS = frozenset({"gt", "lt", "gte", "lte"})
SET_OPS = frozenset({"in", "notin"})

VRAM_TOLERANCE = 0.07
"""``min_vram_gb`` admits GPUs reporting up to 7 % less than ``GB * 1024`` MiB (driver reserve)."""


@dataclass(frozen=True)
class FieldSpec:
    """What values a filterable field holds.

    Attributes:
        kind: ``"number"``, ``"int"``, ``"bool"`` or ``"str"``.
        unit: unit shown in messages ("" when unitless).
        low: smallest possible value of a number field.
        high: largest possible value of a number field (``None`` when unbounded).
        choices: the closed set of values of a str field (``None`` when open).
    """

    kind: str
    unit: str = ""
    low: float = 0.0
    high: float | None = None
    choices: frozenset[str] | None = None

    def allowed_text(self) -> str:
        """Describe the allowed values in one short phrase."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str":
            if self.choices:
                return "one of " + ", ".join(repr(c) for c in sorted(self.choices))
            return "a string"
        what = "an integer" if self.kind == "int" else "a number"
        top = f" and <= {self.high:g}" if self.high is not None else ""
        unit = f" ({self.unit})" if self.unit else ""
        return f"{what} >= {self.low:g}{top}{unit}"


def _n(unit: str = "", high: float | None = None) -> FieldSpec:
    return FieldSpec("number", unit, 0.0, high)


def _i(unit: str = "", high: float | None = None) -> FieldSpec:
    return FieldSpec("int", unit, 0.0, high)


_BOOL = FieldSpec("bool")
_STR = FieldSpec("str")

FIELD_SPECS: dict[str, FieldSpec] = {
    # GPU
    "gpu_name": _STR,
    "gpu_arch": FieldSpec("str", choices=frozenset({"nvidia", "amd"})),
    "num_gpus": _i(),
    "gpu_frac": _n(high=1.0),
    "gpu_ram": _n("MB"),
    "gpu_total_ram": _n("MB"),
    "gpu_mem_bw": _n("GB/s"),
    "total_flops": _n("TFLOPS"),
    "flops_per_dphtotal": _n("TFLOPS per $/h"),
    "dlperf": _n(),
    "dlperf_per_dphtotal": _n(),
    "score": _n(),
    "compute_cap": _i(),
    "cuda_max_good": _n(),
    "driver_vers": _i(),
    "bw_nvlink": _n("GB/s"),
    "gpu_max_power": _n("W"),
    "gpu_max_temp": _n("C"),
    # CPU, memory, disk, network
    "cpu_name": _STR,
    "cpu_arch": FieldSpec("str", choices=frozenset({"amd64", "arm64"})),
    "cpu_cores": _i(),
    "cpu_cores_effective": _n(),
    "cpu_ghz": _n("GHz"),
    "cpu_ram": _n("MB"),
    "has_avx": _i(high=1),
    "disk_space": _n("GB"),
    "disk_bw": _n("MB/s"),
    "disk_name": _STR,
    "inet_up": _n("Mbps"),
    "inet_down": _n("Mbps"),
    "inet_up_cost": _n("$/GB"),
    "inet_down_cost": _n("$/GB"),
    "direct_port_count": _i(),
    "pci_gen": _n(),
    "pcie_bw": _n("GB/s"),
    "static_ip": _BOOL,
    "public_ipaddr": _STR,
    # price
    "dph_base": _n("$/h"),
    "dph_total": _n("$/h"),
    "storage_cost": _n("$/GB/month"),
    "storage_total_cost": _n("$/h"),
    "min_bid": _n("$/h"),
    # host, trust, location
    "ask_contract_id": _i(),
    "bundle_id": _i(),
    "machine_id": _i(),
    "host_id": _i(),
    "reliability": _n(high=1.0),
    "verification": FieldSpec("str", choices=frozenset({"verified", "unverified", "deverified"})),
    "verified": _BOOL,
    "rentable": _BOOL,
    "rented": _BOOL,
    "external": _BOOL,
    "is_bid": _BOOL,
    "vms_enabled": _BOOL,
    "datacenter": _BOOL,
    "hosting_type": _i(high=1),
    "geolocation": _STR,
    "duration": _n("s"),
    "start_date": _n("s"),
    "end_date": _n("s"),
}
"""Every field ``offer_filters`` accepts, by its Vast API name."""

LOCAL_ONLY_FIELDS: dict[str, FieldSpec] = {
    # The RAM the renter gets: host cpu_ram * cpu_cores_effective / cpu_cores, in MB.
    "cpu_ram_effective": _n("MB"),
}
"""Fields that only the local matcher knows; ``to_vast_body`` sends a looser API prefilter."""

ALIASES: dict[str, str] = {
    "reliability2": "reliability",
    "dphtotal": "dph_total",
    "dph": "dph_total",
    "gpu_totalram": "gpu_total_ram",
    "cuda_vers": "cuda_max_good",
    "flops_usd": "flops_per_dphtotal",
    "dlperf_usd": "dlperf_per_dphtotal",
    "driver_version": "driver_vers",
    "id": "ask_contract_id",
}
"""Other spellings of a field: rejected, with the canonical name as the fix."""

OP_SYNONYMS: dict[str, str] = {
    "=": "eq", "==": "eq", "!=": "neq", "ne": "neq", "noteq": "neq", "not eq": "neq",
    ">": "gt", "<": "lt", ">=": "gte", "ge": "gte", "<=": "lte", "le": "lte",
    "nin": "notin", "not in": "notin", "not_in": "notin",
}
"""Operator spellings seen in other tools: rejected, with the accepted name as the fix."""


def spec_for(field: str) -> FieldSpec:
    """Return the spec of an API or local-only field (``KeyError`` if unknown)."""
    spec = FIELD_SPECS.get(field)
    return spec if spec is not None else LOCAL_ONLY_FIELDS[field]


# --- GPU names -------------------------------------------------------------------------

KNOWN_GPU_NAMES: tuple[str, ...] = (
    # NVIDIA datacenter
    "A10", "A10g", "A16", "A30", "A40", "A100 PCIE", "A100 SXM", "A100 SXM4", "A100X", "A800 PCIE",
    "B200", "B300", "GH200 SXM", "H100 NVL", "H100 PCIE", "H100 SXM", "H200", "H200 NVL",
    "L4", "L40", "L40S",
    "Tesla K20c", "Tesla K80", "Tesla M40", "Tesla P4", "Tesla P6", "Tesla P40", "Tesla P100",
    "Tesla T4", "Tesla V100",
    # NVIDIA GeForce
    "GeForce 970", "GTX 750 Ti", "GTX 1050", "GTX 1050 Ti", "GTX 1060", "GTX 1070", "GTX 1070 Ti",
    "GTX 1080", "GTX 1080 Ti", "GTX 1650", "GTX 1650 S", "GTX 1650 Ti", "GTX 1660", "GTX 1660 S",
    "GTX 1660 Ti", "GTX TITAN X",
    "RTX 2060", "RTX 2060S", "RTX 2070", "RTX 2070S", "RTX 2080", "RTX 2080S", "RTX 2080 Ti",
    "RTX 3050", "RTX 3060", "RTX 3060 laptop", "RTX 3060 Ti", "RTX 3070", "RTX 3070 laptop",
    "RTX 3070 Ti", "RTX 3080", "RTX 3080 Ti", "RTX 3090", "RTX 3090 Ti",
    "RTX 4060", "RTX 4060 laptop", "RTX 4060 Ti", "RTX 4070", "RTX 4070 laptop", "RTX 4070S",
    "RTX 4070S Ti", "RTX 4070 Ti", "RTX 4080", "RTX 4080 laptop", "RTX 4080S", "RTX 4090",
    "RTX 4090D", "RTX 4090 Ti",
    "RTX 5060", "RTX 5060 Ti", "RTX 5070", "RTX 5070 Ti", "RTX 5080", "RTX 5090", "RTX 5090 Ti",
    "Titan RTX", "Titan V", "TITAN V CEO", "Titan X", "Titan Xp",
    # NVIDIA professional
    "Quadro K620", "Quadro K2200", "Quadro P2000", "Quadro P4000", "Quadro P5000", "Quadro P6000",
    "Quadro GP100", "Quadro GV100", "Q RTX 4000", "Q RTX 5000", "Q RTX 6000", "Q RTX 8000",
    "RTX A2000", "RTX A4000", "RTX A4500", "RTX A5000", "RTX A6000",
    "RTX 2000Ada", "RTX 4000Ada", "RTX 4500Ada", "RTX 5000Ada", "RTX 5880Ada", "RTX 6000Ada",
    "RTX PRO 4000", "RTX PRO 4000 Mobile", "RTX PRO 4500", "RTX PRO 5000", "RTX PRO 6000",
    "RTX PRO 6000 S", "RTX PRO 6000 WS", "RTX PRO 6000 Max-Q",
    # NVIDIA mining and other
    "CMP 50HX", "CMP 170HX", "P104-100", "P106-100",
    # AMD
    "InstinctMI50", "InstinctMI100", "InstinctMI210", "InstinctMI250X",
    "PRO W6800", "PRO W7800", "PRO W7900", "Pro V620", "Radeon VII", "Radeon Pro VII",
    "RX 6800", "RX 6800 XT", "RX 6900 XT", "RX 6950 XT", "RX 7600", "RX 7700 XT", "RX 7800 XT",
    "RX 7900 GRE", "RX 7900 XT", "RX 7900 XTX",
)
"""The GPU models Vast.ai lists, in its spelling (its ``gpu_name`` values). A user's name that
matches one (:func:`gpu_key`: any case, ``_`` for a space) takes its spelling; ``gpu=`` of
``@app.function`` accepts only these (``offer_filters`` ``gpu_name`` takes any text)."""


def gpu_key(name: str) -> str:
    """Comparison key of a GPU name: case-folded, ``_`` as space, single spaces."""
    return " ".join(name.replace("_", " ").split()).casefold()


def _loose_key(name: str) -> str:
    """``gpu_key`` without spaces and hyphens: "rtx_6000_ada" and "RTX 6000Ada" meet."""
    return gpu_key(name).replace(" ", "").replace("-", "")


_CANONICAL_GPU = {_loose_key(n): n for n in KNOWN_GPU_NAMES}


def is_known_gpu(name: str) -> bool:
    """True when ``name`` is one of :data:`KNOWN_GPU_NAMES` in any spelling ("rtx_4090", "rtx4090")."""
    return _loose_key(name) in _CANONICAL_GPU


def closest_gpu_names(name: str, n: int = 3) -> list[str]:
    """Up to ``n`` known GPU names closest to ``name``: the models of its family first
    ("H100" -> "H100 NVL", "H100 PCIE", "H100 SXM"), then the most similar spellings."""
    key = _loose_key(name)
    family = [v for k, v in _CANONICAL_GPU.items() if len(key) >= 3 and k.startswith(key)]
    similar = [_CANONICAL_GPU[k] for k in difflib.get_close_matches(key, list(_CANONICAL_GPU), n=n, cutoff=0.5)]
    out: list[str] = []
    for v in family + similar:
        if v not in out:
            out.append(v)
    return out[:n]


def canonical_gpu_name(name: str) -> str:
    """Return Vast's spelling of ``name`` ("rtx_4090" -> "RTX 4090", "rtx_6000_ada" -> "RTX 6000Ada").

    Unknown names keep their case but get spaces for underscores.
    """
    return _CANONICAL_GPU.get(_loose_key(name), " ".join(name.replace("_", " ").split()))


# --- geolocation -----------------------------------------------------------------------

_CODE = re.compile(r"[A-Za-z]{2}")


def is_country_code(text: object) -> bool:
    """True for a two-letter country code such as "US" (any case)."""
    return isinstance(text, str) and _CODE.fullmatch(text.strip()) is not None


def country_code(text: object) -> str | None:
    """The upper-case country code an offer's geolocation text ends in.

    "Washington, US" -> "US", ", US" -> "US", "us" -> "US"; text whose last part is not
    two letters ("California, United States") has no code and gives ``None``.
    """
    if not isinstance(text, str):
        return None
    tail = text.rsplit(",", 1)[-1].strip()
    return tail.upper() if _CODE.fullmatch(tail) else None
