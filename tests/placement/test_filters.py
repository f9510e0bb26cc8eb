import copy
import json

import pytest

from apothic.placement import Constraint, FilterError, FilterProblem, Offer, OfferQuery, compile_filters, matches


def problems_of(**kwargs):
    with pytest.raises(FilterError) as info:
        compile_filters(**kwargs)
    return info.value.problems


def only_problem(**kwargs):
    problems = problems_of(**kwargs)
    assert len(problems) == 1, problems
    return problems[0]


def offer(**kwargs):
    kwargs.setdefault("provider", "vast")
    kwargs.setdefault("offer_id", "1")
    return Offer(**kwargs)


# --- named options ---------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, expected", [
    ({"gpu_count": 2}, Constraint("num_gpus", "eq", 2, "gpu_count")),
    ({"min_vram_gb": 10}, Constraint("gpu_ram", "gte", 9523, "min_vram_gb")),
    ({"min_vram_gb": 24}, Constraint("gpu_ram", "gte", 22855, "min_vram_gb")),
    ({"max_cost_per_hour_usd": 1.5}, Constraint("dph_total", "lte", 1.5, "max_cost_per_hour_usd")),
    ({"max_cost_per_tflop_hour_usd": 0.05},
     Constraint("flops_per_dphtotal", "gte", 20.0, "max_cost_per_tflop_hour_usd")),
    ({"min_total_flops": 80}, Constraint("total_flops", "gte", 80, "min_total_flops")),
    ({"min_gpu_ram_bandwidth_gbps": 900}, Constraint("gpu_mem_bw", "gte", 900, "min_gpu_ram_bandwidth_gbps")),
    ({"min_cpu_cores": 4}, Constraint("cpu_cores_effective", "gte", 4, "min_cpu_cores")),
    ({"min_cpu_ram_gb": 32}, Constraint("cpu_ram_effective", "gte", 32000.0, "min_cpu_ram_gb")),
    ({"min_cpu_ghz": 3.0}, Constraint("cpu_ghz", "gte", 3.0, "min_cpu_ghz")),
    ({"min_disk_bandwidth_mb_s": 1000}, Constraint("disk_bw", "gte", 1000, "min_disk_bandwidth_mb_s")),
    ({"min_internet_upload_mbps": 100}, Constraint("inet_up", "gte", 100, "min_internet_upload_mbps")),
    ({"min_internet_download_mbps": 500}, Constraint("inet_down", "gte", 500, "min_internet_download_mbps")),
    ({"secure_cloud_only": True}, Constraint("datacenter", "eq", True, "secure_cloud_only")),
    ({"gpu": "rtx_4090"}, Constraint("gpu_name", "in", ("RTX 4090",), "gpu")),
    ({"geolocation": "us"}, Constraint("geolocation", "eq", "US", "geolocation")),
    ({"geolocation": ["US", "ca", "US"]}, Constraint("geolocation", "in", ("US", "CA"), "geolocation")),
])
def test_named_option_compiles_to_api_constraint(kwargs, expected):
    query = compile_filters(**kwargs)
    assert query.constraints == (expected,)


def test_unset_and_false_options_add_nothing():
    query = compile_filters(secure_cloud_only=False, offer_filters=None)
    assert query.is_empty and query == OfferQuery()
    assert compile_filters().is_empty


def test_seed_example_compiles():
    query = compile_filters(
        gpu=["RTX_4070", "RTX_4070S", "RTX_4070_TI", "RTX_3080", "RTX_3060", "RTX_3060_TI"],
        gpu_count=1, min_vram_gb=10, geolocation=["US", "CA"], max_cost_per_hour_usd=1.5,
        offer_filters={
            "num_gpus": {"gte": 1, "lte": 1},
            "gpu_ram": {"gte": 10 * 1024, "lte": 24 * 1024},
            "verification": {"eq": "verified"},
            "cpu_arch": {"eq": "amd64"},
            "pci_gen": {"gte": 3},
        },
    )
    gpu = query.constraints[0]
    assert gpu.value == ("RTX 4070", "RTX 4070S", "RTX 4070 Ti", "RTX 3080", "RTX 3060", "RTX 3060 Ti")
    assert [c.source for c in query.constraints][-2:] == ["offer_filters.cpu_arch.eq", "offer_filters.pci_gen.gte"]
    good = offer(gpu_name="RTX 4070 Ti", num_gpus=1, gpu_ram_mb=12282, geolocation="Ontario, CA", dph_total=0.3,
                 verification="verified", cpu_arch="amd64", pci_gen=4.0)
    assert matches(query, good)
    assert not matches(query, offer(**{**good.__dict__, "gpu_name": "RTX 4090"}))
    assert not matches(query, offer(**{**good.__dict__, "geolocation": "Berlin, DE"}))


# --- normalisation ---------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["rtx_4090", "RTX 4090", "Rtx  4090", " RTX_4090 "])
def test_gpu_spellings_are_one_gpu(spelling):
    query = compile_filters(gpu=[spelling])
    assert query.constraints[0].value == ("RTX 4090",)
    assert matches(query, offer(gpu_name="RTX 4090", num_gpus=1))
    assert matches(query, offer(gpu_name="rtx 4090", num_gpus=1))
    assert not matches(query, offer(gpu_name="RTX 4080", num_gpus=1))


def test_unknown_gpu_name_keeps_case_gets_spaces_and_dedupes():
    query = compile_filters(gpu=["Radeon_Pro_W7900", "radeon pro w7900"])
    assert query.constraints[0].value == ("Radeon Pro W7900",)


def test_gpu_name_in_offer_filters_is_normalised_too():
    query = compile_filters(offer_filters={"gpu_name": {"in": ["h100_sxm", "A100_SXM4"], "neq": "tesla_t4"}})
    assert query.constraints[0].value == ("H100 SXM", "A100 SXM4")
    assert query.constraints[1].value == "Tesla T4"
    assert matches(query, offer(gpu_name="H100 SXM"))


@pytest.mark.parametrize("location, ok", [
    ("Washington, US", True), (", US", True), ("US", True), ("Toronto, CA", True),
    ("California, United States", False), ("Hong Kong, HK", False), ("", False),
])
def test_geolocation_matches_trailing_country_code(location, ok):
    query = compile_filters(geolocation=["US", "CA"])
    assert matches(query, offer(geolocation=location)) is ok


def test_geolocation_needs_a_real_trailing_code():
    spain = compile_filters(geolocation="ES")
    assert not matches(spain, offer(geolocation="California, United States"))  # ends in "es", not a code
    assert matches(spain, offer(geolocation="Madrid, ES "))
    assert not matches(spain, offer(geolocation="MADRID ES"))


def test_vram_tolerance_admits_driver_reported_sizes():
    query = compile_filters(min_vram_gb=24)
    assert matches(query, offer(gpu_ram_mb=24564))  # a 24 GB A5000 as the driver reports it
    assert matches(query, offer(gpu_ram_mb=22855))
    assert not matches(query, offer(gpu_ram_mb=16376))


def test_min_cpu_ram_gb_is_the_ram_you_get():
    query = compile_filters(min_cpu_ram_gb=32)
    big_host_small_share = Offer.from_vast({"id": 1, "dph_total": 1, "cpu_ram": 256000, "cpu_cores": 64,
                                            "cpu_cores_effective": 4})
    whole_host = Offer.from_vast({"id": 2, "dph_total": 1, "cpu_ram": 64000, "cpu_cores": 8,
                                  "cpu_cores_effective": 8})
    assert not matches(query, big_host_small_share)  # 16 GB share of a 256 GB host
    assert matches(query, whole_host)
    assert query.to_vast_body()["cpu_ram"] == {"gte": 32000.0}


# --- rejections: named options ---------------------------------------------------------


@pytest.mark.parametrize("kwargs, loc", [
    ({"gpu_count": 0}, ("gpu_count",)),
    ({"gpu_count": 1.5}, ("gpu_count",)),
    ({"gpu_count": True}, ("gpu_count",)),
    ({"min_vram_gb": -1}, ("min_vram_gb",)),
    ({"min_vram_gb": "10"}, ("min_vram_gb",)),
    ({"max_cost_per_hour_usd": -0.1}, ("max_cost_per_hour_usd",)),
    ({"max_cost_per_hour_usd": float("inf")}, ("max_cost_per_hour_usd",)),
    ({"max_cost_per_hour_usd": float("nan")}, ("max_cost_per_hour_usd",)),
    ({"max_cost_per_tflop_hour_usd": 0}, ("max_cost_per_tflop_hour_usd",)),
    ({"min_cpu_cores": -2}, ("min_cpu_cores",)),
    ({"min_internet_download_mbps": False}, ("min_internet_download_mbps",)),
    ({"secure_cloud_only": "yes"}, ("secure_cloud_only",)),
    ({"gpu": []}, ("gpu",)),
    ({"gpu": 4090}, ("gpu",)),
    ({"gpu": ["RTX 4090", ""]}, ("gpu", "1")),
    ({"geolocation": "USA"}, ("geolocation",)),
    ({"geolocation": ["US", "U5"]}, ("geolocation", "1")),
    ({"geolocation": []}, ("geolocation",)),
])
def test_bad_named_option_is_rejected(kwargs, loc):
    problem = only_problem(**kwargs)
    assert problem.loc == loc
    assert len(loc) == 2 or problem.value is kwargs[loc[0]]
    assert problem.allowed and problem.fix


def test_comma_separated_geolocation_fix_suggests_a_list():
    problem = only_problem(geolocation="US,CA")
    assert "['US', 'CA']" in problem.fix


# --- rejections: offer_filters ---------------------------------------------------------


def test_unknown_field_suggests_close_matches():
    problem = only_problem(offer_filters={"gpu_rma": {"gte": 10000}})
    assert problem.loc == ("offer_filters", "gpu_rma")
    assert "'gpu_ram'" in problem.fix


@pytest.mark.parametrize("field, hint", [
    ("dph", "dph_total"), ("reliability2", "reliability"), ("cuda_vers", "cuda_max_good"),
    ("min_vram_gb", "gpu_ram"), ("gpu", "gpu_name"), ("cpu_ram_effective", "min_cpu_ram_gb"),
    ("bogus_field_xyz", "gpu_ram"),
])
def test_unknown_field_fix_names_the_right_field(field, hint):
    problem = only_problem(offer_filters={field: {"eq": 1}})
    assert hint in problem.fix


@pytest.mark.parametrize("op, fix", [(">=", "'gte'"), ("==", "'eq'"), ("nin", "'notin'"), ("gtee", "'gte'"),
                                     ("between", "eq, gt")])
def test_unknown_operator(op, fix):
    problem = only_problem(offer_filters={"gpu_ram": {op: 10000}})
    assert problem.loc == ("offer_filters", "gpu_ram", op)
    assert fix in problem.fix


@pytest.mark.parametrize("filters, loc", [
    ({"num_gpus": {"in": 2}}, ("offer_filters", "num_gpus", "in")),
    ({"num_gpus": {"notin": "2"}}, ("offer_filters", "num_gpus", "notin")),
    ({"num_gpus": {"in": [1, "2"]}}, ("offer_filters", "num_gpus", "in", "1")),
    ({"dph_total": {"lte": "1.5"}}, ("offer_filters", "dph_total", "lte")),
    ({"dph_total": {"lte": True}}, ("offer_filters", "dph_total", "lte")),
    ({"dph_total": {"lte": float("nan")}}, ("offer_filters", "dph_total", "lte")),
    ({"verification": {"eq": 1}}, ("offer_filters", "verification", "eq")),
    ({"verification": {"gte": "verified"}}, ("offer_filters", "verification", "gte")),
    ({"datacenter": {"eq": "true"}}, ("offer_filters", "datacenter", "eq")),
    ({"datacenter": {"gt": False}}, ("offer_filters", "datacenter", "gt")),
    ({"cpu_arch": {"eq": "x86_64"}}, ("offer_filters", "cpu_arch", "eq")),
    ({"geolocation": {"in": ["US", "Canada"]}}, ("offer_filters", "geolocation", "in", "1")),
    ({"gpu_ram": {"gte": -1}}, ("offer_filters", "gpu_ram", "gte")),
    ({"reliability": {"gte": 1.5}}, ("offer_filters", "reliability", "gte")),
    ({"num_gpus": {"eq": 1.5}}, ("offer_filters", "num_gpus", "eq")),
    ({"gpu_ram": {"gte": 24}}, ("offer_filters", "gpu_ram", "gte")),
    ({"gpu_ram": {}}, ("offer_filters", "gpu_ram")),
    ({"gpu_ram": 10000}, ("offer_filters", "gpu_ram")),
    ({"gpu_name": {"in": []}}, ("offer_filters", "gpu_name", "in")),
])
def test_bad_offer_filter_value_is_rejected(filters, loc):
    problem = only_problem(offer_filters=filters)
    assert problem.loc == loc
    assert problem.allowed and problem.fix


def test_offer_filters_must_be_a_dict():
    assert only_problem(offer_filters=[("gpu_ram", "gte", 1)]).loc == ("offer_filters",)


def test_helpful_fixes():
    assert "'amd64'" in only_problem(offer_filters={"cpu_arch": {"eq": "x86_64"}}).fix
    assert "24000 MB" in only_problem(offer_filters={"gpu_ram": {"gte": 24}}).fix
    assert "{'in': [2]}" in only_problem(offer_filters={"num_gpus": {"in": 2}}).fix


def test_fractional_bound_on_integer_field_is_allowed():
    query = compile_filters(offer_filters={"num_gpus": {"gte": 1.5}})
    assert matches(query, offer(num_gpus=2)) and not matches(query, offer(num_gpus=1))


def test_set_values_become_sorted_tuples_and_empty_notin_is_allowed():
    query = compile_filters(offer_filters={"geolocation": {"in": {"us", "ca"}}, "num_gpus": {"notin": []}})
    assert query.constraints[0].value == ("CA", "US")
    assert query.constraints[1].value == ()


# --- contradictions --------------------------------------------------------------------


@pytest.mark.parametrize("filters", [
    {"gpu_ram": {"gte": 20000, "lte": 10000}},
    {"dph_total": {"gt": 1.0, "lt": 1.0}},
    {"dph_total": {"gte": 1.0, "lt": 1.0}},
    {"dph_total": {"gte": 1.0, "lte": 1.0, "neq": 1.0}},
    {"num_gpus": {"gt": 1, "lt": 2}},
    {"num_gpus": {"gte": 1, "lte": 2, "notin": [1, 2]}},
    {"num_gpus": {"eq": 4, "lte": 2}},
    {"num_gpus": {"in": [1, 2], "gte": 3}},
    {"num_gpus": {"in": [1, 2], "notin": [1, 2, 3]}},
    {"num_gpus": {"eq": 2, "neq": 2}},
    {"num_gpus": {"lt": 0}},
    {"reliability": {"gt": 1}},
    {"gpu_name": {"eq": "RTX 4090", "notin": ["rtx_4090"]}},
    {"verification": {"notin": ["verified", "unverified", "deverified"]}},
    {"datacenter": {"neq": True, "in": [True]}},
    {"geolocation": {"in": ["US"], "notin": ["us"]}},
])
def test_contradictory_offer_filters(filters):
    field = next(iter(filters))
    problem = only_problem(offer_filters=filters)
    assert problem.loc == ("offer_filters", field)
    assert "contradict" in problem.message
    assert "Relax or remove" in problem.fix


@pytest.mark.parametrize("kwargs, sources", [
    ({"min_vram_gb": 10, "offer_filters": {"gpu_ram": {"lte": 8000}}}, {"min_vram_gb", "offer_filters.gpu_ram.lte"}),
    ({"gpu": "RTX 4090", "offer_filters": {"gpu_name": {"eq": "RTX 3080"}}}, {"gpu", "offer_filters.gpu_name.eq"}),
    ({"gpu_count": 2, "offer_filters": {"num_gpus": {"lte": 1}}}, {"gpu_count", "offer_filters.num_gpus.lte"}),
    ({"max_cost_per_hour_usd": 1, "offer_filters": {"dph_total": {"gt": 2}}},
     {"max_cost_per_hour_usd", "offer_filters.dph_total.gt"}),
    ({"secure_cloud_only": True, "offer_filters": {"datacenter": {"eq": False}}},
     {"secure_cloud_only", "offer_filters.datacenter.eq"}),
    ({"geolocation": "US", "offer_filters": {"geolocation": {"notin": ["US"]}}},
     {"geolocation", "offer_filters.geolocation.notin"}),
])
def test_named_option_contradicting_offer_filter(kwargs, sources):
    problem = only_problem(**kwargs)
    assert set(problem.value) == sources
    for source in sources:
        assert source in problem.fix


def test_vram_contradiction_explains_units():
    problem = only_problem(min_vram_gb=10, offer_filters={"gpu_ram": {"lte": 8000}})
    assert "gpu_ram >= 9523 MB" in problem.message
    assert "GB per GPU" in problem.fix and "MB per GPU" in problem.fix


@pytest.mark.parametrize("filters", [
    {"gpu_ram": {"gte": 10000, "lte": 10000}},
    {"dph_total": {"gte": 0, "lte": 0}},
    {"num_gpus": {"gt": 1, "lt": 3}},
    {"num_gpus": {"gte": 1, "lte": 3, "notin": [1, 3]}},
    {"reliability": {"gte": 1}},
    {"verification": {"notin": ["verified", "unverified"]}},
    {"gpu_name": {"in": ["RTX 4090", "RTX 3080"], "neq": "rtx_4090"}},
])
def test_satisfiable_edge_cases_are_not_contradictions(filters):
    compile_filters(offer_filters=filters)


def test_all_problems_are_collected_and_listed():
    with pytest.raises(FilterError) as info:
        compile_filters(
            gpu_count=0,
            geolocation="USA",
            min_vram_gb=10,
            offer_filters={"gpu_rma": {"gte": 1}, "gpu_ram": {"lte": 8000}, "dph_total": {">=": 1}},
        )
    error = info.value
    locs = [p.loc for p in error.problems]
    assert locs == [("gpu_count",), ("geolocation",), ("offer_filters", "gpu_rma"),
                    ("offer_filters", "dph_total", ">="), ("offer_filters", "gpu_ram")]
    text = str(error)
    assert text.splitlines()[0] == "5 problems in placement filters:"
    for i, loc in enumerate(locs, 1):
        assert f"  {i}. {'.'.join(loc)}:" in text
    assert isinstance(error, ValueError)
    again = copy.deepcopy(error)  # same reduce protocol as pickle, without importing by module name
    assert again.problems == error.problems and str(again) == text


def test_problem_str_has_location_value_allowed_and_fix():
    p = FilterProblem(("min_vram_gb",), -1, "a number >= 0", "Write 24.", "No GPU has that.")
    assert str(p) == "min_vram_gb: No GPU has that. Got -1; allowed: a number >= 0. Fix: Write 24."
    # Hashable although its value is a dict (the value does not take part in the hash).
    a, b = (FilterProblem(("offer_filters", "x"), {"gte": 1}, "a", "b") for _ in range(2))
    assert a == b and len({a, b}) == 1


# --- the Vast body, helpers ------------------------------------------------------------


def test_vast_body_uses_api_names_units_and_defaults():
    query = compile_filters(gpu=["rtx_4090", "A100_SXM4"], min_vram_gb=10, geolocation="us",
                            max_cost_per_hour_usd=2, secure_cloud_only=True,
                            offer_filters={"gpu_ram": {"gte": 12000}, "reliability": {"gte": 0.98}})
    body = query.to_vast_body(limit=64)
    assert body == {
        "verified": {"eq": True}, "external": {"eq": False}, "rentable": {"eq": True}, "rented": {"eq": False},
        "gpu_name": {"in": ["RTX 4090", "A100 SXM4"]},
        "gpu_ram": {"gte": 12000},  # the tighter of min_vram_gb's 9523 and 12000
        "geolocation": {"eq": "US"},
        "dph_total": {"lte": 2},
        "datacenter": {"eq": True},
        "reliability": {"gte": 0.98},
        "order": [["dph_total", "asc"]],
        "type": "on-demand",
        "limit": 64,
    }
    json.dumps(body)


def test_vast_body_user_filters_replace_defaults():
    body = compile_filters(offer_filters={"verification": {"in": ["verified", "unverified"]},
                                          "rented": {"eq": True}}).to_vast_body()
    assert "verified" not in body and body["rented"] == {"eq": True}
    assert body["rentable"] == {"eq": True} and body["external"] == {"eq": False}
    assert body["verification"] == {"in": ["verified", "unverified"]}


def test_vast_body_merges_same_operator():
    query = OfferQuery((
        Constraint("num_gpus", "neq", 3, "a"), Constraint("num_gpus", "neq", 5, "b"),
        Constraint("gpu_ram", "lte", 30000, "c"), Constraint("gpu_ram", "lte", 20000, "d"),
        Constraint("geolocation", "in", ("US", "CA", "DE"), "e"), Constraint("geolocation", "in", ("DE", "US"), "f"),
        Constraint("cpu_arch", "notin", ("arm64",), "g"), Constraint("cpu_arch", "neq", "amd64", "h"),
        Constraint("cpu_ram_effective", "lte", 9000, "i"),
    ))
    body = query.to_vast_body()
    assert body["num_gpus"] == {"notin": [3, 5]}
    assert body["gpu_ram"] == {"lte": 20000}
    assert body["geolocation"] == {"in": ["US", "DE"]}
    assert body["cpu_arch"] == {"notin": ["arm64", "amd64"]}
    assert "cpu_ram" not in body and "cpu_ram_effective" not in body
    assert "limit" not in body


@pytest.mark.parametrize("kwargs, wants", [
    ({}, False),
    ({"gpu": "RTX 4090"}, True),
    ({"gpu_count": 1}, True),
    ({"min_vram_gb": 8}, True),
    ({"min_total_flops": 10}, True),
    ({"max_cost_per_tflop_hour_usd": 0.1}, True),
    ({"min_cpu_cores": 4, "max_cost_per_hour_usd": 0.5}, False),
    ({"offer_filters": {"num_gpus": {"gte": 0}}}, False),
    ({"offer_filters": {"num_gpus": {"gte": 1}}}, True),
    ({"offer_filters": {"gpu_name": {"neq": "Tesla T4"}}}, False),
])
def test_wants_gpu(kwargs, wants):
    assert compile_filters(**kwargs).wants_gpu is wants


def test_query_str_names_sources():
    assert str(OfferQuery()) == "any offer"
    text = str(compile_filters(min_vram_gb=10, max_cost_per_hour_usd=1.5))
    assert text == "min_vram_gb: gpu_ram >= 9523 MB; max_cost_per_hour_usd: dph_total <= 1.5 $/h"
