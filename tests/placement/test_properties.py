"""Property tests: rank, matches, explain and compile_filters agree with each other."""

import json
import math
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apothic.placement import (
    Constraint, FilterError, Offer, OfferQuery, compile_filters, explain, matches, rank, rank_key,
)

from .strategies import NUMERIC, POOL, constraints, offers

# Per-test settings (not a global profile, which would change other packages' tests); no example
# database, so that running the tests writes nothing into the checkout.
fast = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
quick = settings(fast, max_examples=30)

queries = st.lists(constraints(), max_size=4).map(lambda cs: OfferQuery(tuple(cs)))
offer_lists = st.lists(offers(), max_size=12)


@fast
@given(queries, offer_lists)
def test_rank_returns_exactly_the_matching_offers_sorted(query, listed):
    ranked = rank(query, listed)
    assert Counter(ranked) == Counter(o for o in listed if matches(query, o))
    keys = [rank_key(o) for o in ranked]
    assert keys == sorted(keys)
    prices = [o.dph_total for o in ranked]
    assert prices == sorted(prices)


@fast
@given(queries, offer_lists, st.randoms(use_true_random=False))
def test_rank_does_not_depend_on_input_order(query, listed, rnd):
    shuffled = list(listed)
    rnd.shuffle(shuffled)
    assert rank(query, shuffled) == rank(query, listed)


@fast
@given(queries, offer_lists)
def test_explain_is_consistent_with_matches(query, listed):
    result = explain(query, listed)
    assert result.total == len(listed)
    assert result.matched == sum(matches(query, o) for o in listed)
    failures = [[i for i, c in enumerate(query.constraints) if not c.accepts(o)] for o in listed]
    for o, failed in zip(listed, failures):
        assert matches(query, o) == (not failed)
    counts = Counter(i for failed in failures for i in failed)
    singles = Counter(failed[0] for failed in failures if len(failed) == 1)
    assert [r.constraint for r in result.rejections] == list(query.constraints)
    for i, r in enumerate(result.rejections):
        assert r.count == counts[i]
        assert r.only == singles[i]
    if result.matched == 0 and listed:
        assert "none matched" in str(result)


@fast
@given(queries, constraints(), offer_lists)
def test_adding_a_constraint_never_grows_the_matching_set(query, extra, listed):
    tighter = OfferQuery(query.constraints + (extra,))
    before = {id(o) for o in listed if matches(query, o)}
    after = {id(o) for o in listed if matches(tighter, o)}
    assert after <= before
    assert len(rank(tighter, listed)) <= len(rank(query, listed))


@pytest.mark.parametrize("attr", sorted(NUMERIC))
@quick
@given(data=st.data())
def test_a_single_offer_filter_matches_iff_the_comparison_holds(attr, data):
    field = NUMERIC[attr]
    op = data.draw(st.sampled_from(["gte", "gt", "lte", "lt", "eq", "neq"]), label="op")
    pool = [v for v in POOL[attr] if not (field == "gpu_ram" and 0 < v < 256)]
    x = data.draw(st.sampled_from(pool) | st.floats(0, max(pool) + 1), label="x")
    if field == "reliability":
        x = min(x, 1.0)
    if op in ("eq", "neq") and field == "num_gpus":
        x = int(x)
    if field == "gpu_ram" and 0 < x < 256:
        x = 0
    offer = data.draw(offers(), label="offer")
    try:
        query = compile_filters(offer_filters={field: {op: x}})
    except FilterError:
        # Only an impossible filter may be refused: no offer in the pool can satisfy it.
        assert (op == "gt" and field == "reliability" and x == 1.0) or (op == "lt" and x == 0)
        return
    value = offer.field(field)
    expected = {"gte": value >= x, "gt": value > x, "lte": value <= x, "lt": value < x,
                "eq": value == x, "neq": value != x}[op]
    assert matches(query, offer) == expected


@fast
@given(offers(), st.sampled_from(["US", "CA", "HK", "DE"]))
def test_geolocation_matches_iff_the_text_ends_in_the_code(offer, code):
    query = compile_filters(geolocation=code.lower())
    tail = offer.geolocation.rsplit(",", 1)[-1].strip()
    assert matches(query, offer) == (tail == code)


def _candidates(values, integer, high):
    """Values that hit every region of a set of bounds/points built from ``values``."""
    points = sorted({0.0, *map(float, values), *([] if high is None else [high])})
    if integer:
        return range(0, int(max(points)) + 3)
    mids = [(a + b) / 2 for a, b in zip(points, points[1:])]
    return [*points, *mids, points[-1] + 1]


@pytest.mark.parametrize("field, integer, high", [("dph_total", False, None), ("num_gpus", True, None),
                                                  ("reliability", False, 1.0)])
@settings(fast, max_examples=150)
@given(data=st.data())
def test_contradiction_check_is_exact(field, integer, high, data):
    """compile_filters refuses a set of filters on one field iff no value satisfies them all."""
    values = st.sampled_from([0, 1, 2, 3] if integer else [0.0, 0.25, 0.5, 1.0])
    ops = data.draw(st.lists(st.sampled_from(["eq", "neq", "gt", "lt", "gte", "lte", "in", "notin"]),
                             min_size=1, max_size=4, unique=True), label="ops")
    spec = {op: (data.draw(st.lists(values, max_size=3, unique=True)) if op in ("in", "notin")
                 else data.draw(values)) for op in ops}
    if spec.get("in") == []:
        spec["in"] = [data.draw(values)]
    built = [Constraint(field, op, tuple(v) if isinstance(v, list) else v, op) for op, v in spec.items()]
    flat = [x for v in spec.values() for x in (v if isinstance(v, list) else [v])]
    feasible = any(all(c.holds_for(v) for c in built)
                   for v in _candidates(flat, integer, high) if high is None or v <= high)
    try:
        compile_filters(offer_filters={field: spec})
    except FilterError as error:
        assert not feasible, str(error)
        assert all("contradict" in p.message for p in error.problems)
    else:
        assert feasible


@fast
@given(offers(provider="process"), queries)
def test_a_query_that_wants_a_gpu_rejects_machines_without_one(base, query):
    no_gpu = Offer(**{**base.__dict__, "gpu_name": "", "num_gpus": 0, "gpu_ram_mb": 0.0, "total_flops": 0.0,
                      "gpu_mem_bw_gbps": 0.0, "compute_cap": 0, "cuda_max_good": 0.0})
    if query.wants_gpu:
        assert not matches(query, no_gpu)


named = st.fixed_dictionaries({}, optional={
    "gpu": st.sampled_from(["rtx_4090", ["RTX 3080", "tesla_t4"]]),
    "gpu_count": st.integers(1, 8),
    "min_vram_gb": st.sampled_from([8, 10, 24, 80]),
    "geolocation": st.sampled_from(["US", ["us", "CA"]]),
    "max_cost_per_hour_usd": st.floats(0, 5),
    "max_cost_per_tflop_hour_usd": st.floats(0.001, 1),
    "min_cpu_ram_gb": st.floats(0, 512),
    "secure_cloud_only": st.booleans(),
    "offer_filters": st.sampled_from([{"reliability": {"gte": 0.95}}, {"num_gpus": {"lte": 4}},
                                      {"verification": {"in": ["verified"]}, "pci_gen": {"gte": 4}}]),
})


@fast
@given(named, offer_lists)
def test_compiled_queries_serialise_and_rank(kwargs, listed):
    try:
        query = compile_filters(**kwargs)
    except FilterError:
        assert kwargs.get("gpu_count", 0) > 4 and "offer_filters" in kwargs
        return
    body = json.loads(json.dumps(query.to_vast_body()))
    for name in ("verified", "external", "rentable", "rented"):
        assert name in body or name == "verified" and "verification" in body
    assert all(c.field in body or c.field == "cpu_ram_effective" for c in query.constraints)
    for o in rank(query, listed):
        assert matches(query, o)
        assert not math.isnan(o.dph_total)
