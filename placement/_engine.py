"""One placement engine: a function's whole query, and the order in which offers are tried.

Every enabled provider lists its offers (this host through ``process`` and ``docker`` at no
cost, the marketplace through ``vast``); one query filters them all and one ranking orders
them, so a function that asks for a GPU this host lacks lands on the marketplace without any
provider argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._compile import compile_filters
from ._offer import Offer
from ._query import Constraint, OfferQuery
from ._rank import rank

# MiB (``memory_mb``) to the MB of ``cpu_ram_effective``.
_MIB_TO_MB = 1.048576

PLACEMENT_OPTIONS = (
    "gpu", "gpu_count", "min_vram_gb", "geolocation", "max_cost_per_hour_usd", "max_cost_per_tflop_hour_usd",
    "min_total_flops", "min_gpu_ram_bandwidth_gbps", "min_cpu_cores", "min_cpu_ram_gb", "min_cpu_ghz",
    "min_disk_bandwidth_mb_s", "min_internet_upload_mbps", "min_internet_download_mbps", "secure_cloud_only",
    "offer_filters",
)
"""The ``@app.function`` options that are placement filters (arguments of :func:`compile_filters`)."""


def resource_constraints(*, cpu: float = 0, memory_mb: float = 0, disk_gb: float | None = None) -> list[Constraint]:
    """What a function's own sizing asks of any machine: its cores, its memory and its disk."""
    out = []
    if cpu:
        out.append(Constraint("cpu_cores_effective", "gte", float(cpu), "cpu"))
    if memory_mb:
        out.append(Constraint("cpu_ram_effective", "gte", round(memory_mb * _MIB_TO_MB, 3), "memory_mb"))
    if disk_gb:
        out.append(Constraint("disk_space", "gte", float(disk_gb), "disk_gb"))
    return out


def placement_query(
    options: Mapping[str, Any] | None = None, *, cpu: float = 0, memory_mb: float = 0, disk_gb: float | None = None
) -> OfferQuery:
    """The query of one function: its placement options, then its sizing.

    Raises:
        FilterError: the options are invalid (see :func:`compile_filters`).
    """
    query = compile_filters(**dict(options or {}))
    return OfferQuery(query.constraints + tuple(resource_constraints(cpu=cpu, memory_mb=memory_mb, disk_gb=disk_gb)))


def choose(query: OfferQuery, offers: Iterable[Offer], prefer: Sequence[str] = ()) -> list[Offer]:
    """The matching offers in the order to try them.

    :func:`rank` orders them (cheapest, then most reliable, ...); among offers of the same
    price, providers listed earlier in ``prefer`` come first (this host's ``process`` and
    ``docker`` offers both cost nothing: the configuration says which is tried first).
    """
    order = {name: i for i, name in enumerate(prefer)}
    ranked = rank(query, offers)
    return sorted(ranked, key=lambda o: (o.dph_total, order.get(o.provider, len(order))))
