from apothic.placement import Offer, OfferQuery, compile_filters, rank, rank_key


def offer(i, provider="vast", **kwargs):
    return Offer(provider=provider, offer_id=str(i), **kwargs)


def test_cheapest_then_reliable_then_fastest_then_id():
    offers = [
        offer("e", dph_total=0.5, reliability=0.99, total_flops=10),
        offer("d", dph_total=0.5, reliability=0.99, total_flops=10),
        offer("c", dph_total=0.5, reliability=0.99, total_flops=80),
        offer("b", dph_total=0.5, reliability=0.999, total_flops=1),
        offer("a", dph_total=0.9, reliability=1.0, total_flops=500),
        offer("f", dph_total=0.2, reliability=0.5, total_flops=0),
    ]
    assert [o.offer_id for o in rank(OfferQuery(), offers)] == ["f", "b", "c", "d", "e", "a"]


def test_local_free_offer_competes_at_zero_cost():
    local = offer("local", provider="process", dph_total=0.0, reliability=1.0, cpu_cores=8.0, cpu_ram_gb=32.0)
    gpu_local = offer("gpu", provider="docker", dph_total=0.0, reliability=1.0, gpu_name="RTX 3080", num_gpus=1,
                      gpu_ram_mb=10240)
    rented = offer(7, dph_total=0.3, reliability=0.99, gpu_name="RTX 4090", num_gpus=1, gpu_ram_mb=24564)
    assert rank(OfferQuery(), [rented, local]) == [local, rented]
    wants_24 = compile_filters(min_vram_gb=24)
    assert rank(wants_24, [local, gpu_local, rented]) == [rented]
    wants_cpu = compile_filters(min_cpu_cores=4, min_cpu_ram_gb=16)
    assert rank(wants_cpu, [rented, gpu_local, local]) == [local]


def test_rank_drops_non_matching_and_accepts_iterables():
    query = compile_filters(max_cost_per_hour_usd=1.0)
    ranked = rank(query, (offer(i, dph_total=d) for i, d in enumerate([1.5, 0.7, 1.0, 0.1])))
    assert [o.dph_total for o in ranked] == [0.1, 0.7, 1.0]


def test_rank_key_breaks_full_ties_deterministically():
    a = offer(1, provider="vast", dph_total=1.0)
    b = offer(1, provider="docker", dph_total=1.0)
    c = offer(1, provider="vast", dph_total=1.0, extra={"note": "x"})
    assert rank(OfferQuery(), [a, b, c]) == rank(OfferQuery(), [c, b, a])
    assert rank_key(b) < rank_key(a)
