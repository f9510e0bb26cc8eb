"""The control worker's placement step: one ranking over every enabled provider's offers.

These call ``ControlActivities._place`` directly (no Temporal needed): the providers are real
(this host, the local Docker engine, and the Vast.ai simulator over HTTP).
"""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError

from apothic import Image
from apothic._control._config import load_settings
from apothic._contracts import Deployment, FunctionSpec
from apothic.activities._control import ControlActivities
from apothic.vastsim import Simulator


def deployment(**spec: object) -> Deployment:
    return Deployment(app="a", function="f", version=1, task_queue="q", fleet_id="fleet", spec=FunctionSpec(
        name="f", provider="", **spec))


def activities(monkeypatch: pytest.MonkeyPatch, providers: str, sim: Simulator | None = None) -> ControlActivities:
    monkeypatch.setenv("APOTHIC_PROVIDERS", providers)
    if sim is not None:
        monkeypatch.setenv("VAST_URL", sim.url)
        monkeypatch.setenv("VAST_API_KEY", sim.api_key)
    return ControlActivities(load_settings())


async def record(events: list, event: str, data: dict) -> None:
    events.append((event, data))


@pytest.fixture(scope="module")
def sim():
    with Simulator(api_key="k", catalogue_seed=3) as s:
        yield s


async def test_this_host_is_free_so_a_plain_function_stays_here(monkeypatch, sim) -> None:
    acts = activities(monkeypatch, "vast,docker,process", sim)
    events: list = []
    host, offer, _ = await acts._place(deployment(), lambda e, d: record(events, e, d))
    # vast is listed first, but this host costs nothing; docker before process as configured.
    assert host.name == "docker" and offer.dph_total == 0
    (placed,) = [d for e, d in events if e == "placement"]
    assert placed["provider"] == "docker" and placed["matched"] >= 2


async def test_a_gpu_function_lands_on_the_marketplace_without_a_provider_argument(monkeypatch, sim) -> None:
    acts = activities(monkeypatch, "process,docker,vast", sim)
    dep = deployment(placement={"gpu": "RTX_3090", "max_cost_per_hour_usd": 2.0})
    host, offer, candidates = await acts._place(dep, lambda e, d: record([], e, d))
    assert host.name == "vast" and offer.gpu_name == "RTX 3090"
    assert candidates[0] == offer and all(c.provider == "vast" for c in candidates)
    assert [c.dph_total for c in candidates] == sorted(c.dph_total for c in candidates)


async def test_sizing_counts_too(monkeypatch, sim) -> None:
    acts = activities(monkeypatch, "process,vast", sim)
    # More cores than this host has: a rented machine that has them.
    host, offer, _ = await acts._place(deployment(cpu=64), lambda e, d: record([], e, d))
    assert host.name == "vast" and offer.cpu_cores >= 64


async def test_a_container_image_on_the_process_provider_alone_names_the_docker_provider(monkeypatch) -> None:
    acts = activities(monkeypatch, "process")
    dep = deployment(image=Image.debian_slim().apt_install("curl").to_dict())
    with pytest.raises(ApplicationError) as info:
        await acts._place(dep, lambda e, d: record([], e, d))
    text = str(info.value)
    assert "needs a container" in text and "docker provider" in text
    assert info.value.non_retryable


async def test_no_match_counts_what_each_constraint_rejected(monkeypatch, sim) -> None:
    acts = activities(monkeypatch, "process,vast", sim)
    dep = deployment(placement={"gpu": "H100", "geolocation": "JP", "max_cost_per_hour_usd": 0.01})
    with pytest.raises(ApplicationError) as info:
        await acts._place(dep, lambda e, d: record([], e, d))
    text = str(info.value)
    assert "no machine matches a.f" in text
    for part in ("not matching gpu", "over max_cost_per_hour_usd", "geolocation"):
        assert part in text, text
