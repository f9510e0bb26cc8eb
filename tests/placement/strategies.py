"""Hypothesis strategies for offers and constraints, shared by the placement property tests."""

from hypothesis import strategies as st

from apothic.placement import Constraint, Offer

# Offer attribute -> Vast API field, for the numeric fields the property tests exercise.
NUMERIC = {
    "num_gpus": "num_gpus",
    "gpu_ram_mb": "gpu_ram",
    "total_flops": "total_flops",
    "gpu_mem_bw_gbps": "gpu_mem_bw",
    "cpu_cores": "cpu_cores_effective",
    "cpu_ghz": "cpu_ghz",
    "disk_bw_mb_s": "disk_bw",
    "inet_up_mbps": "inet_up",
    "inet_down_mbps": "inet_down",
    "dph_total": "dph_total",
    "reliability": "reliability",
    "pci_gen": "pci_gen",
}

# Few distinct values, so that ties and boundary hits are common.
POOL = {
    "num_gpus": [0, 1, 2, 4, 8],
    "gpu_ram_mb": [0, 8192, 9523, 10240, 16376, 24564, 81920],
    "total_flops": [0.0, 10.5, 27.525, 82.6, 300.0],
    "gpu_mem_bw_gbps": [0.0, 400.0, 936.2, 1008.0],
    "cpu_cores": [0.0, 1.0, 4.0, 6.5, 32.0],
    "cpu_ghz": [0.0, 2.1, 3.5],
    "disk_bw_mb_s": [0.0, 500.0, 2500.0],
    "inet_up_mbps": [0.0, 100.0, 870.5],
    "inet_down_mbps": [0.0, 128.0, 1000.0],
    "dph_total": [0.0, 0.2, 0.35, 1.0, 1.5, 2.8],
    "reliability": [0.0, 0.9, 0.99, 1.0],
    "pci_gen": [0.0, 3.0, 4.0],
}

GPU_NAMES = ["", "RTX 4090", "RTX 3080", "RTX 4070 Ti", "H100 SXM", "Tesla T4"]
LOCATIONS = ["", "Washington, US", "Hong Kong, HK", "Toronto, CA", "DE", ", US",
             "California, United States"]


def _value(attr):
    return st.sampled_from(POOL[attr])


@st.composite
def offers(draw, provider=None):
    numeric = {attr: draw(_value(attr)) for attr in NUMERIC}
    return Offer(
        provider=draw(st.sampled_from(["process", "docker", "vast"])) if provider is None else provider,
        offer_id=str(draw(st.integers(0, 30))),
        gpu_name=draw(st.sampled_from(GPU_NAMES)),
        geolocation=draw(st.sampled_from(LOCATIONS)),
        verification=draw(st.sampled_from(["verified", "unverified", ""])),
        datacenter=draw(st.booleans()),
        cpu_arch=draw(st.sampled_from(["amd64", "arm64", ""])),
        extra=draw(st.sampled_from([{}, {"direct_port_count": 3}, {"direct_port_count": 0}])),
        **numeric,
    )


OPS = ["eq", "neq", "gt", "lt", "gte", "lte", "in", "notin"]


@st.composite
def constraints(draw):
    kind = draw(st.sampled_from(["numeric", "numeric", "numeric", "gpu", "geo", "extra"]))
    op = draw(st.sampled_from(OPS))
    if kind == "numeric":
        attr = draw(st.sampled_from(sorted(NUMERIC)))
        field, pool = NUMERIC[attr], _value(attr)
    elif kind == "gpu":
        op = draw(st.sampled_from(["eq", "neq", "in", "notin"]))
        field, pool = "gpu_name", st.sampled_from(["RTX 4090", "rtx_3080", "H100 SXM", "A100 SXM4"])
    elif kind == "geo":
        op = draw(st.sampled_from(["eq", "neq", "in", "notin"]))
        field, pool = "geolocation", st.sampled_from(["US", "CA", "HK", "DE", "FR"])
    else:
        field, pool = "direct_port_count", st.sampled_from([0, 1, 3])
    if op in ("in", "notin"):
        value = tuple(draw(st.lists(pool, min_size=1, max_size=3, unique=True)))
    else:
        value = draw(pool)
    return Constraint(field, op, value, f"offer_filters.{field}.{op}")
