"""Start failures against the Vast.ai simulator: permanent ones stop provisioning at once and
destroy what was rented; transient ones (429, a taken offer, a host that died) move on.

Real HTTP and real instance processes (the simulator's process mode); no Temporal.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from apothic.placement import Offer, compile_filters, rank
from apothic.placement.providers.vast import (
    ProvisionFailed,
    VastClient,
    provision,
)
from apothic.vastsim import Simulator

from .running import fast_client, running_simulator

KEY = "start-failures-key"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with running_simulator(api_key=KEY, catalogue_seed=41, loading_s=0.15) as s:
        yield s


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[VastClient]:
    async with fast_client(sim, KEY) as c:
        yield c


async def offers(client: VastClient, n: int = 3) -> list[Offer]:
    query = compile_filters(max_cost_per_hour_usd=5.0)
    ranked = rank(query, await client.search(query))
    assert len(ranked) >= n
    return ranked[:n]


def creates(sim: Simulator) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if r["method"] == "PUT" and "/asks/" in r["path"]]


def rented(sim: Simulator) -> list[dict[str, Any]]:
    return [i for i in sim.state()["instances"] if not i["destroyed"]]


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        json.dumps(data)
        self.seen.append((kind, data))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [d for k, d in self.seen if k == kind]


def test_an_image_that_cannot_be_pulled_stays_loading_with_the_daemon_error(sim: Simulator) -> None:
    sim.fail_pull(image=r"^missing/", count=0)
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=sim.url, headers=headers, timeout=10) as api:
        offer = api.post("/api/v0/bundles/", json={"order": [["dph_total", "asc"]], "limit": 2}).json()["offers"]
        ids = []
        for o, image in zip(offer, ["missing/app:1", "present/app:1"]):
            r = api.put(f"/api/v0/asks/{o['id']}/", json={"image": image, "runtype": "args", "onstart": "/bin/sh",
                                                          "args": ["-c", "exec sleep 300"], "label": "t"})
            ids.append(r.json()["new_contract"])
        deadline = time.monotonic() + 5
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = [api.get(f"/api/v0/instances/{i}/").json()["instances"] for i in ids]
            if rows[1]["actual_status"] == "running" and "manifest" in rows[0]["status_msg"]:
                break
            time.sleep(0.03)
        assert rows[0]["actual_status"] == "loading"
        assert rows[0]["status_msg"] == ("Error response from daemon: manifest for missing/app:1 not found: "
                                         "manifest unknown: manifest unknown")
        assert rows[1]["actual_status"] == "running"
        assert sim.state()["instances"][0]["pids"] == []  # nothing ran
        for i in ids:
            api.delete(f"/api/v0/instances/{i}/")
    assert httpx.post(f"{sim.url}/_sim/faults", json={"kind": "fail_pull", "count": -1}).status_code == 400


async def test_an_image_no_host_can_pull_fails_at_the_first_offer_and_is_destroyed(sim: Simulator,
                                                                                   client: VastClient) -> None:
    ranked = await offers(client, 3)
    sim.fail_pull(count=0, message="Error response from daemon: pull access denied for ghost/app, repository "
                  "does not exist or may require 'docker login'")
    events = Events()
    started = time.monotonic()
    with pytest.raises(ProvisionFailed) as caught:
        await provision(client, ranked, image="ghost/app:1", env={}, onstart="exec sleep 300", disk_gb=10,
                        label=f"t-{uuid.uuid4().hex[:8]}", ready_timeout_s=60, on_event=events,
                        poll_interval_s=0.05)
    took = time.monotonic() - started
    failure = caught.value
    assert failure.permanent and len(failure.attempts) == 1 and "pull access denied" in str(failure)
    assert "no other offer was tried" in str(failure)
    assert len(creates(sim)) == 1 and rented(sim) == []
    assert took < 5, f"a permanent failure took {took:.1f} s"
    (destroyed,) = events.of("destroyed")
    assert destroyed["rented_s"] > 0 and destroyed["cost_usd"] == pytest.approx(
        destroyed["rented_s"] * ranked[0].dph_total / 3600, abs=1e-6)
    assert events.of("not_ready")[0]["permanent"] is True and events.of("failed")[0]["permanent"] is True


async def test_transient_failures_move_on_to_the_next_offer(sim: Simulator, client: VastClient) -> None:
    ranked = await offers(client, 4)
    sim.take_offer(int(ranked[0].offer_id))  # taken by someone else
    sim.host_dies(offer_id=int(ranked[1].offer_id), after_s=0.05)  # its host dies while it loads
    sim.rate_limit(2, method="PUT", path="/asks/")  # and the API is busy for a moment
    events = Events()
    instance_id, offer = await provision(client, ranked, image="x", env={}, onstart="exec sleep 300", disk_gb=10,
                                         label=f"t-{uuid.uuid4().hex[:8]}", ready_timeout_s=10, on_event=events,
                                         poll_interval_s=0.05)
    assert offer == ranked[2]
    assert [d["offer_id"] for d in events.of("create")] == [o.offer_id for o in ranked[:3]]
    assert "offline" in events.of("not_ready")[0]["reason"] and events.of("not_ready")[0]["permanent"] is False
    assert events.of("running")[0]["loading_s"] > 0
    assert [i["id"] for i in rented(sim)] == [instance_id]
    await client.destroy(instance_id)


async def test_no_offer_at_all_is_permanent(client: VastClient) -> None:
    with pytest.raises(ProvisionFailed) as caught:
        await provision(client, [], image="x", env={}, onstart="true", disk_gb=10, label="t-none",
                        ready_timeout_s=1)
    assert caught.value.permanent
