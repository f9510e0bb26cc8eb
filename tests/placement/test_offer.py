import copy
import math

import pytest

from apothic.placement import Offer

RAW = {
    "id": 4242,
    "ask_contract_id": 4242,
    "machine_id": 77,
    "gpu_name": "RTX A5000",
    "num_gpus": 2,
    "gpu_ram": 24564,
    "gpu_total_ram": 49128,
    "total_flops": 55.05,
    "flops_per_dphtotal": 1.0,  # deliberately stale: the offer recomputes it
    "gpu_mem_bw": 668.1,
    "cpu_cores": 32,
    "cpu_cores_effective": 4.0,
    "cpu_ram": 128576,
    "cpu_ghz": 3.4,
    "disk_space": 120.5,
    "disk_bw": 2500.0,
    "inet_up": 850.2,
    "inet_down": 910.7,
    "dph_total": 1.00207,
    "reliability": 0.995,
    "reliability2": 0.97,
    "verification": "verified",
    "geolocation": "Washington, US",
    "hosting_type": 1,
    "cpu_arch": "amd64",
    "pci_gen": 4.0,
    "compute_cap": 860,
    "cuda_max_good": 12.8,
    "direct_port_count": 12,
    "rentable": True,
}


def test_from_vast_maps_fields_and_units():
    o = Offer.from_vast(RAW)
    assert o.provider == "vast"
    assert o.offer_id == "4242"
    assert o.gpu_name == "RTX A5000"
    assert o.num_gpus == 2
    assert o.gpu_ram_mb == 24564
    assert o.total_flops == pytest.approx(55.05)
    assert o.gpu_mem_bw_gbps == pytest.approx(668.1)
    assert o.cpu_cores == 4.0
    # RAM you get: host MB * effective / host cores / 1000 -> GB
    assert o.cpu_ram_gb == pytest.approx(128576 * 4 / 32 / 1000)
    assert o.cpu_ghz == 3.4
    assert o.disk_space_gb == 120.5
    assert o.disk_bw_mb_s == 2500.0
    assert (o.inet_up_mbps, o.inet_down_mbps) == (850.2, 910.7)
    assert o.dph_total == 1.00207
    assert o.reliability == 0.995
    assert o.verification == "verified"
    assert o.geolocation == "Washington, US"
    assert o.datacenter is True
    assert (o.cpu_arch, o.pci_gen, o.compute_cap, o.cuda_max_good) == ("amd64", 4.0, 860, 12.8)


def test_from_vast_keeps_other_fields_in_extra_and_host_totals():
    o = Offer.from_vast(RAW)
    assert o.extra["machine_id"] == 77
    assert o.extra["direct_port_count"] == 12
    assert o.extra["cpu_ram"] == 128576 and o.extra["cpu_cores"] == 32
    assert "gpu_name" not in o.extra and "dph_total" not in o.extra


def test_field_returns_api_names_in_api_units():
    o = Offer.from_vast(RAW)
    assert o.field("gpu_ram") == 24564
    assert o.field("num_gpus") == 2
    assert o.field("dph_total") == 1.00207
    assert o.field("verification") == "verified"
    assert o.field("cpu_arch") == "amd64"
    assert o.field("pci_gen") == 4.0
    assert o.field("geolocation") == "Washington, US"
    assert o.field("reliability") == 0.995
    assert o.field("flops_per_dphtotal") == pytest.approx(55.05 / 1.00207)
    assert o.field("cpu_ram") == 128576  # host RAM, as the API filters it
    assert o.field("cpu_ram_effective") == pytest.approx(16072.0)
    assert o.field("cpu_cores") == 32
    assert o.field("cpu_cores_effective") == 4.0
    assert o.field("direct_port_count") == 12
    assert o.field("datacenter") is True
    assert o.field("verified") is True
    assert o.field("id") == 4242
    assert o.field("no_such_field") is None


def test_field_derivations_without_raw_data():
    o = Offer(provider="process", offer_id="local", num_gpus=2, gpu_ram_mb=8000, cpu_ram_gb=16.0,
              cpu_cores=8.0)
    assert o.field("gpu_total_ram") == 16000
    assert o.field("cpu_ram") == 16000.0
    assert o.field("cpu_cores") == 8.0
    assert o.field("hosting_type") == 0
    assert o.field("flops_per_dphtotal") == 0.0  # free, but no TFLOPS
    assert Offer(provider="docker", offer_id="g", total_flops=35.0).field("flops_per_dphtotal") == math.inf
    assert o.field("id") == "local"


def test_datacenter_from_explicit_flag_and_reliability_fallback():
    raw = {"id": 1, "dph_total": 0.5, "datacenter": False, "hosting_type": 1, "reliability2": 0.8}
    o = Offer.from_vast(raw)
    assert o.datacenter is False
    assert o.reliability == 0.8
    assert o.cpu_ram_gb == 0.0 and o.gpu_name == "" and o.num_gpus == 0


@pytest.mark.parametrize("raw, text", [
    ({"dph_total": 1.0}, "no 'id'"),
    ({"id": 3}, "no 'dph_total'"),
    ({"id": 3, "dph_total": 1.0, "gpu_ram": "lots"}, "gpu_ram"),
])
def test_from_vast_rejects_malformed(raw, text):
    with pytest.raises(ValueError, match=text):
        Offer.from_vast(raw)


@pytest.mark.parametrize("kwargs", [{"dph_total": -1.0}, {"dph_total": math.nan}, {"reliability": math.inf},
                                    {"total_flops": "fast"}])
def test_offer_rejects_bad_rank_fields(kwargs):
    with pytest.raises(ValueError):
        Offer(provider="vast", offer_id="1", **kwargs)


def test_offer_is_frozen_hashable_copyable_and_copies_extra():
    extra = {"a": 1}
    o = Offer(provider="docker", offer_id="x", extra=extra)
    extra["a"] = 2
    assert o.extra == {"a": 1}
    with pytest.raises(AttributeError):
        o.dph_total = 3.0  # type: ignore[misc]
    assert hash(o) == hash(Offer(provider="docker", offer_id="x", extra={"a": 1}))
    assert copy.deepcopy(o) == o
