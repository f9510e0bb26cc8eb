"""`Offer`: the one shape in which every provider lists the machines it can start."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field as dc_field
from typing import Any

# Vast API field -> Offer attribute, for the fields an Offer holds typed.
_TYPED: dict[str, str] = {
    "gpu_name": "gpu_name",
    "num_gpus": "num_gpus",
    "gpu_ram": "gpu_ram_mb",
    "total_flops": "total_flops",
    "gpu_mem_bw": "gpu_mem_bw_gbps",
    "cpu_cores_effective": "cpu_cores",
    "cpu_ghz": "cpu_ghz",
    "disk_space": "disk_space_gb",
    "disk_bw": "disk_bw_mb_s",
    "inet_up": "inet_up_mbps",
    "inet_down": "inet_down_mbps",
    "dph_total": "dph_total",
    "reliability": "reliability",
    "verification": "verification",
    "geolocation": "geolocation",
    "datacenter": "datacenter",
    "cpu_arch": "cpu_arch",
    "pci_gen": "pci_gen",
    "compute_cap": "compute_cap",
    "cuda_max_good": "cuda_max_good",
}

# Raw Vast keys that from_vast consumes into typed attributes (so they leave `extra`).
# `cpu_cores` and `cpu_ram` (host totals) stay in `extra`: the typed values are the renter's share.
_CONSUMED = frozenset(_TYPED) | {"id"}


@dataclass(frozen=True)
class Offer:
    """One machine a provider can start, in units every provider shares.

    Numbers that a provider does not report are 0 (or "" for text): a filter asking for more
    than 0 then rejects the offer. Providers other than Vast fill what they know; a local
    ``process`` or ``docker`` offer costs ``dph_total=0.0`` and competes like any other.

    Attributes:
        provider: "process", "docker" or "vast".
        offer_id: the provider's id of this offer (Vast: the ask id, as text).
        gpu_name: GPU model with spaces, as Vast spells it ("RTX 4090"); "" for no GPU.
        num_gpus: GPUs in the offer.
        gpu_ram_mb: memory per GPU in MB (MiB as the driver reports it, e.g. 24564 for 24 GB).
        total_flops: TFLOPS summed over all GPUs.
        gpu_mem_bw_gbps: GPU memory bandwidth, GB/s.
        cpu_cores: vCPUs the renter gets (Vast ``cpu_cores_effective``), may be fractional.
        cpu_ram_gb: RAM the renter gets, GB (Vast: host RAM scaled by the core share).
        cpu_ghz: CPU clock, GHz.
        disk_space_gb: free disk, GB.
        disk_bw_mb_s: disk bandwidth, MB/s.
        inet_up_mbps: upload bandwidth, Mbit/s.
        inet_down_mbps: download bandwidth, Mbit/s.
        dph_total: price in USD per hour, storage included; finite and >= 0.
        reliability: host reliability, 0..1.
        verification: "verified", "unverified", "deverified" or "".
        geolocation: "City, CC" or "CC", ending in a two-letter country code when known.
        datacenter: True for secure cloud (Vast ``hosting_type == 1``).
        cpu_arch: "amd64", "arm64" or "".
        pci_gen: PCIe generation.
        compute_cap: CUDA compute capability times 100 (860 for 8.6); 0 if unknown.
        cuda_max_good: highest CUDA version the driver supports (12.8).
        extra: every other raw field, by its API name. Treat as read-only.
    """

    provider: str
    offer_id: str
    gpu_name: str = ""
    num_gpus: int = 0
    gpu_ram_mb: float = 0.0
    total_flops: float = 0.0
    gpu_mem_bw_gbps: float = 0.0
    cpu_cores: float = 0.0
    cpu_ram_gb: float = 0.0
    cpu_ghz: float = 0.0
    disk_space_gb: float = 0.0
    disk_bw_mb_s: float = 0.0
    inet_up_mbps: float = 0.0
    inet_down_mbps: float = 0.0
    dph_total: float = 0.0
    reliability: float = 0.0
    verification: str = ""
    geolocation: str = ""
    datacenter: bool = False
    cpu_arch: str = ""
    pci_gen: float = 0.0
    compute_cap: int = 0
    cuda_max_good: float = 0.0
    extra: Mapping[str, Any] = dc_field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name in ("dph_total", "reliability", "total_flops"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"Offer.{name} must be a finite number, got {value!r}")
        if self.dph_total < 0:
            raise ValueError(f"Offer.dph_total must be >= 0 USD/hour, got {self.dph_total!r}")
        object.__setattr__(self, "extra", dict(self.extra))

    @classmethod
    def from_vast(cls, raw: Mapping[str, Any]) -> Offer:
        """Build an offer from one entry of Vast's ``{"offers": [...]}`` search answer.

        Units follow the Vast API (``gpu_ram`` MB per GPU, ``cpu_ram`` MB for the whole host,
        ``inet_*`` Mbit/s, ``dph_total`` USD/hour). The RAM the renter gets is
        ``cpu_ram * cpu_cores_effective / cpu_cores / 1000`` GB. Missing or null numbers become 0.

        Raises:
            ValueError: ``id`` or ``dph_total`` is missing, or a number field is not numeric.
        """
        if raw.get("id") is None:
            raise ValueError("Vast offer has no 'id'")
        if raw.get("dph_total") is None:
            raise ValueError(f"Vast offer {raw['id']!r} has no 'dph_total'")

        def num(key: str, default: float = 0.0) -> float:
            value = raw.get(key)
            if value is None:
                return default
            try:
                return float(value)
            except (TypeError, ValueError):
                raise ValueError(f"Vast offer {raw['id']!r}: {key}={value!r} is not a number") from None

        def text(key: str) -> str:
            value = raw.get(key)
            return "" if value is None else str(value)

        host_cores = num("cpu_cores")
        cores = num("cpu_cores_effective", host_cores)
        host_ram_mb = num("cpu_ram")
        share = cores / host_cores if host_cores > 0 and 0 < cores <= host_cores else 1.0
        reliability = raw.get("reliability")
        if reliability is None:
            reliability = raw.get("reliability2")
        if raw.get("datacenter") is not None:
            datacenter = bool(raw["datacenter"])
        else:
            datacenter = raw.get("hosting_type") == 1
        return cls(
            provider="vast",
            offer_id=str(raw["id"]),
            gpu_name=text("gpu_name"),
            num_gpus=int(num("num_gpus")),
            gpu_ram_mb=num("gpu_ram"),
            total_flops=num("total_flops"),
            gpu_mem_bw_gbps=num("gpu_mem_bw"),
            cpu_cores=cores,
            cpu_ram_gb=host_ram_mb * share / 1000.0,
            cpu_ghz=num("cpu_ghz"),
            disk_space_gb=num("disk_space"),
            disk_bw_mb_s=num("disk_bw"),
            inet_up_mbps=num("inet_up"),
            inet_down_mbps=num("inet_down"),
            dph_total=num("dph_total"),
            reliability=0.0 if reliability is None else float(reliability),
            verification=text("verification"),
            geolocation=text("geolocation"),
            datacenter=datacenter,
            cpu_arch=text("cpu_arch"),
            pci_gen=num("pci_gen"),
            compute_cap=int(num("compute_cap")),
            cuda_max_good=num("cuda_max_good"),
            extra={k: v for k, v in raw.items() if k not in _CONSUMED},
        )

    def field(self, name: str) -> Any:
        """Return this offer's value for a Vast API field name, in the API's units.

        ``gpu_ram`` is MB per GPU, ``cpu_ram`` is host MB (``cpu_ram_effective`` is the renter's
        MB), ``flops_per_dphtotal`` is ``total_flops / dph_total`` (infinite when free, 0 without
        TFLOPS), and
        ``geolocation`` is the raw text. Names the offer does not hold typed come from
        ``extra``; a name found nowhere gives ``None``.
        """
        attr = _TYPED.get(name)
        if attr is not None:
            return getattr(self, attr)
        if name in self.extra and name not in _DERIVED_OVERRIDES:
            return self.extra[name]
        derive = _DERIVED.get(name)
        return derive(self) if derive is not None else None


def _flops_per_dollar(o: Offer) -> float:
    # Free compute is infinitely cheap per TFLOPS, but a machine with no TFLOPS gives none per dollar.
    if o.dph_total == 0:
        return math.inf if o.total_flops > 0 else 0.0
    return o.total_flops / o.dph_total


def _ask_id(o: Offer) -> Any:
    if "id" in o.extra:
        return o.extra["id"]
    return int(o.offer_id) if o.offer_id.isdigit() else o.offer_id


_DERIVED = {
    "id": _ask_id,
    "ask_contract_id": _ask_id,
    "flops_per_dphtotal": _flops_per_dollar,
    "cpu_ram_effective": lambda o: o.cpu_ram_gb * 1000.0,
    "cpu_ram": lambda o: o.cpu_ram_gb * 1000.0,
    "cpu_cores": lambda o: o.cpu_cores,
    "gpu_total_ram": lambda o: o.gpu_ram_mb * o.num_gpus,
    "hosting_type": lambda o: int(o.datacenter),
    "verified": lambda o: o.verification == "verified",
}
# Derived from typed attributes even when the raw answer carried them, so they stay consistent.
_DERIVED_OVERRIDES = frozenset({"flops_per_dphtotal", "cpu_ram_effective"})
