import pytest

from apothic.placement import Constraint, NoMatchExplanation, Offer, OfferQuery, compile_filters, explain, matches


def offer(i, **kwargs):
    return Offer(provider="vast", offer_id=str(i), **kwargs)


def test_explain_reads_like_the_design():
    query = compile_filters(max_cost_per_hour_usd=1.5, min_vram_gb=10)
    offers = [offer(i, dph_total=2.0, gpu_ram_mb=24564) for i in range(7)]
    offers += [offer(i, dph_total=0.5, gpu_ram_mb=8192) for i in range(7, 12)]
    result = explain(query, offers)
    assert (result.total, result.matched) == (12, 0)
    assert [(r.constraint.source, r.count, r.only) for r in result.rejections] == [
        ("min_vram_gb", 5, 5), ("max_cost_per_hour_usd", 7, 7)]  # query order
    assert str(result) == (
        "12 offers, none matched: 7 over max_cost_per_hour_usd (dph_total <= 1.5 $/h), "
        "5 below min_vram_gb (gpu_ram >= 9523 MB). "
        "Relaxing one filter alone would admit: max_cost_per_hour_usd 7, min_vram_gb 5."
    )


def test_explain_counts_every_rejecting_constraint_and_single_rejections():
    query = compile_filters(max_cost_per_hour_usd=1.0, min_vram_gb=10, geolocation="US")
    offers = [
        offer(1, dph_total=2.0, gpu_ram_mb=4000, geolocation="Berlin, DE"),  # rejected by all three
        offer(2, dph_total=2.0, gpu_ram_mb=24000, geolocation="Austin, US"),  # only by price
        offer(3, dph_total=0.5, gpu_ram_mb=24000, geolocation="Austin, US"),  # matches
    ]
    result = explain(query, offers)
    assert (result.total, result.matched) == (3, 1)
    assert [(r.constraint.source, r.count, r.only) for r in result.rejections] == [
        ("min_vram_gb", 1, 0), ("geolocation", 1, 0), ("max_cost_per_hour_usd", 2, 1)]
    text = str(result)
    assert text.startswith("3 offers, 1 matched: 2 over max_cost_per_hour_usd (dph_total <= 1 $/h), ")
    assert "1 not matching geolocation (geolocation == 'US')" in text
    assert text.endswith("Relaxing one filter alone would admit: max_cost_per_hour_usd 1.")


def test_explain_without_offers_or_constraints():
    assert str(explain(compile_filters(gpu="RTX 4090"), [])) == (
        "0 offers: no provider listed any offer to match against.")
    result = explain(OfferQuery(), [offer(1), offer(2)])
    assert result == NoMatchExplanation(total=2, matched=2, rejections=())
    assert str(result) == "2 offers, 2 matched."
    assert str(explain(OfferQuery(), [offer(1)])) == "1 offer, 1 matched."


def test_explain_accepts_a_generator():
    query = compile_filters(max_cost_per_hour_usd=1)
    result = explain(query, (offer(i, dph_total=float(i)) for i in range(4)))
    assert (result.total, result.matched, result.rejections[0].count) == (4, 2, 2)


def test_missing_field_fails_every_operator():
    bare = offer(1)  # no direct_port_count in extra
    for op, value in [("eq", 1), ("neq", 1), ("gte", 0), ("lt", 5), ("in", (1,)), ("notin", (1,))]:
        assert not matches(OfferQuery((Constraint("direct_port_count", op, value, "x"),)), bare), op
    assert matches(OfferQuery((Constraint("direct_port_count", "gte", 1, "x"),)),
                   offer(2, extra={"direct_port_count": 3}))


def test_text_values_never_satisfy_numeric_bounds():
    c = Constraint("direct_port_count", "gte", 1, "x")
    assert not c.holds_for("5") and not c.holds_for(float("nan")) and c.holds_for(5)


@pytest.mark.parametrize("op, value, expected", [
    ("eq", 2, [2]), ("neq", 2, [0, 1, 4]), ("gt", 1, [2, 4]), ("lt", 1, [0]), ("gte", 1, [1, 2, 4]),
    ("lte", 1, [0, 1]), ("in", (0, 4), [0, 4]), ("notin", (0, 4), [1, 2]),
])
def test_each_operator(op, value, expected):
    query = OfferQuery((Constraint("num_gpus", op, value, "t"),))
    got = [n for n in (0, 1, 2, 4) if matches(query, offer(n, num_gpus=n))]
    assert got == expected


def test_bool_and_string_fields():
    secure = compile_filters(secure_cloud_only=True, offer_filters={"verification": {"neq": "deverified"}})
    assert matches(secure, offer(1, datacenter=True, verification="verified"))
    assert not matches(secure, offer(2, datacenter=False, verification="verified"))
    assert not matches(secure, offer(3, datacenter=True, verification="deverified"))
    raw_bool = OfferQuery((Constraint("rentable", "eq", True, "x"),))
    assert matches(raw_bool, offer(4, extra={"rentable": 1}))
    assert not matches(raw_bool, offer(5, extra={"rentable": None}))


def test_cost_per_tflop_hour():
    query = compile_filters(max_cost_per_tflop_hour_usd=0.05)  # at least 20 TFLOPS per $/h
    assert matches(query, offer(1, total_flops=82.6, dph_total=0.4))  # 206 TFLOPS per $/h
    assert not matches(query, offer(2, total_flops=10.0, dph_total=1.0))
    assert matches(query, offer(3, total_flops=10.0, dph_total=0.0))  # free compute
    assert not matches(query, offer(4, total_flops=0.0, dph_total=0.0))  # free, but no TFLOPS at all
