"""``apothic offers``: the ranked offers a function (or a set of flags) would be placed on.

The same engine as the control worker's: every enabled provider's offers (this host through
``process``/``docker`` at no cost, Vast.ai when ``VAST_API_KEY`` is set), one query from the
function's placement options and sizing, one ranking.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..exceptions import InvalidError

_FLAGS = (
    ("gpu_count", int), ("min_vram_gb", float), ("max_cost_per_hour_usd", float),
    ("max_cost_per_tflop_hour_usd", float), ("min_total_flops", float), ("min_gpu_ram_bandwidth_gbps", float),
    ("min_cpu_cores", float), ("min_cpu_ram_gb", float), ("min_cpu_ghz", float), ("min_disk_bandwidth_mb_s", float),
    ("min_internet_upload_mbps", float), ("min_internet_download_mbps", float),
)


def add_offers_parser(sub: Any) -> None:
    o = sub.add_parser(
        "offers",
        help="ranked offers that match a function's placement filters (or flags)",
        description="Show the offers of every enabled provider that match, best first: what the control "
        "worker would try, in that order. Give a function (path/to/app.py::name) to use its filters and "
        "sizing, or flags.",
    )
    o.add_argument("target", nargs="?", help="path/to/app.py::function (its filters, cpu, memory_mb, disk_gb)")
    o.add_argument("--gpu", action="append", help="GPU model, e.g. RTX_4090 (repeat for several)")
    o.add_argument("--geolocation", action="append", help="two-letter country code (repeat for several)")
    for name, kind in _FLAGS:
        o.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind)
    o.add_argument("--secure-cloud-only", action="store_true", default=None)
    o.add_argument(
        "--filter", action="append", default=[], metavar="FIELD:OP:VALUE",
        help='an offer_filters entry, e.g. "pci_gen:gte:3" or \'gpu_name:in:["RTX 4090","RTX 3090"]\'',
    )
    o.add_argument("--cpu", type=float, help="cores the function needs (default: the function's, else 1)")
    o.add_argument("--memory-mb", dest="memory_mb", type=float, help="MiB the function needs")
    o.add_argument("--disk-gb", dest="disk_gb", type=float, help="disk the function needs, GB")
    o.add_argument("--provider", action="append", help="only these providers (default: the enabled ones)")
    o.add_argument("--limit", type=int, default=20, help="show at most this many (default 20)")
    o.add_argument("--json", action="store_true", help="print JSON")
    o.set_defaults(func=cmd_offers)


def _filters(specs: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        field, sep, rest = spec.partition(":")
        op, sep2, value = rest.partition(":")
        if not (sep and sep2 and field and op):
            raise InvalidError(f"--filter {spec!r}: expected FIELD:OP:VALUE, e.g. pci_gen:gte:3.")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(field, {})[op] = parsed
    return out


def _from_function(target: str) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """The function's placement options, its sizing, and whether its image needs a container."""
    from .._options._validation import placement_options
    from ._appfile import apps_in, load_app_file

    path, _, fn_name = target.partition("::")
    functions = {name: f for app in apps_in(load_app_file(path)) for name, f in app.registered_functions.items()}
    if not fn_name and len(functions) == 1:
        fn_name = next(iter(functions))
    if fn_name not in functions:
        raise InvalidError(f"{path}: name one of its functions, `{path}::NAME` (it has {sorted(functions)}).")
    o = functions[fn_name].options
    sizing = {"cpu": o.cpu, "memory_mb": o.memory_mb, "disk_gb": o.disk_gb}
    return placement_options(o), sizing, o.image is not None and o.image.needs_container()


def _row(rank: int, o: Any) -> dict[str, Any]:
    return {
        "rank": rank, "provider": o.provider, "offer_id": o.offer_id, "gpu_name": o.gpu_name, "num_gpus": o.num_gpus,
        "vram_gb": round(o.gpu_ram_mb / 1024, 1), "dph_total": round(o.dph_total, 4), "geolocation": o.geolocation,
        "reliability": round(o.reliability, 4), "verification": o.verification, "cpu_cores": o.cpu_cores,
        "cpu_ram_gb": round(o.cpu_ram_gb, 1), "total_flops": round(o.total_flops, 1),
    }


def cmd_offers(args: argparse.Namespace) -> int:
    from .._control._config import apothic_home, load_settings
    from .._control._loop import run_blocking
    from ..placement import FilterError, choose, placement_query
    from ..placement.providers.offers import explain_no_match, gather_offers

    options: dict[str, Any] = {}
    sizing: dict[str, Any] = {"cpu": 1, "memory_mb": 1024, "disk_gb": None}
    needs_container = False
    if args.target:
        options, sizing, needs_container = _from_function(args.target)
    flags = {"gpu": args.gpu, "geolocation": args.geolocation, "secure_cloud_only": args.secure_cloud_only}
    flags.update({name: getattr(args, name) for name, _ in _FLAGS})
    options.update({k: v for k, v in flags.items() if v is not None})
    if args.filter:
        merged = {field: dict(ops) for field, ops in (options.get("offer_filters") or {}).items()}
        for field, ops in _filters(args.filter).items():
            merged.setdefault(field, {}).update(ops)
        options["offer_filters"] = merged
    sizing.update({k: getattr(args, k) for k in ("cpu", "memory_mb", "disk_gb") if getattr(args, k) is not None})
    try:
        query = placement_query(options, **sizing)
    except FilterError as e:
        raise InvalidError(str(e)) from None
    providers = list(args.provider or load_settings().provider_settings().enabled)
    skipped: dict[str, str] = {}
    if needs_container and "process" in providers:
        skipped["process"] = "the function's image needs a container"
    usable = [p for p in providers if p not in skipped]
    offers, down = run_blocking(gather_offers(usable, query, disk_path=apothic_home()))
    skipped.update(down)
    ranked = choose(query, offers, providers)
    rows = [_row(i, o) for i, o in enumerate(ranked[: max(0, args.limit)], 1)]
    why_not = ""
    if not ranked:
        why_not = str(run_blocking(explain_no_match([p for p in usable if p not in skipped], query, offers)))
    if args.json:
        print(json.dumps({"query": str(query), "providers": providers, "skipped": skipped,
                          "matched": len(ranked), "offers": rows, "no_match": why_not}, indent=2))
        return 0 if ranked else 1
    for name, why in skipped.items():
        print(f"({name}: no offers: {why})", file=sys.stderr)
    if not ranked:
        print(f"no offer matches ({query}): {why_not}")
        return 1
    head = f"{'#':>3}  {'provider':8}  {'offer':>14}  {'gpu':22}  {'vram':>6}  {'$/hour':>8}  {'reliab.':>7}  location"
    print(head)
    for r in rows:
        gpu = f"{r['num_gpus']}x {r['gpu_name']}" if r["num_gpus"] else "-"
        vram = f"{r['vram_gb']:g}G" if r["num_gpus"] else "-"
        print(f"{r['rank']:>3}  {r['provider']:8}  {r['offer_id'][-14:]:>14}  {gpu[:22]:22}  {vram:>6}  "
              f"{r['dph_total']:>8.4f}  {r['reliability']:>7.3f}  {r['geolocation'] or '-'}")
    print(f"{len(ranked)} matching of {len(offers)} offers ({query})", file=sys.stderr)
    return 0
