"""The public surface of apothic.placement is frozen, and the package stays pure."""

import ast
import importlib
import inspect
import sys
from pathlib import Path

placement = importlib.import_module("apothic.placement")  # not `import a.b`: that also imports `apothic`

PACKAGE = Path(__file__).resolve().parents[2] / "placement"


def test_public_names_are_frozen_and_sorted():
    assert placement.__all__ == sorted(placement.__all__)
    assert placement.__all__ == [
        "Constraint", "FilterError", "FilterProblem", "NoMatchExplanation", "OPERATORS", "Offer",
        "OfferQuery", "PLACEMENT_OPTIONS", "Rejection", "choose", "compile_filters", "explain", "matches",
        "placement_query", "rank", "rank_key", "resource_constraints",
    ]
    assert placement.OPERATORS == {"eq", "neq", "gt", "lt", "gte", "lte", "in", "notin"}


def test_compile_filters_signature_matches_the_decorator():
    params = inspect.signature(placement.compile_filters).parameters
    assert list(params) == [
        "gpu", "gpu_count", "min_vram_gb", "geolocation", "max_cost_per_hour_usd",
        "max_cost_per_tflop_hour_usd", "min_total_flops", "min_gpu_ram_bandwidth_gbps", "min_cpu_cores",
        "min_cpu_ram_gb", "min_cpu_ghz", "min_disk_bandwidth_mb_s", "min_internet_upload_mbps",
        "min_internet_download_mbps", "secure_cloud_only", "offer_filters",
    ]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is None for p in params.values())


def test_placement_imports_only_the_standard_library_and_itself():
    top_level = [p for p in PACKAGE.glob("*.py")]
    assert top_level
    for path in top_level:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: inside the package
                    continue
                names = [node.module or ""]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                assert root == "__future__" or root in sys.stdlib_module_names, f"{path.name} imports {name}"
