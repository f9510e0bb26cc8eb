"""`VastClient` and `provision` against the Vast.ai simulator: real HTTP, real processes, faults."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from apothic.placement import Offer, compile_filters, matches, rank
from apothic.placement.providers.vast import (
    CreateOutcomeUnknown,
    InstanceNotFound,
    OfferGone,
    ProvisionFailed,
    VastAuthError,
    VastClient,
    VastError,
    VastRateLimited,
    provision,
)
from apothic.vastsim import Simulator, marked_pids

from ...vastsim.running import FAST, fast_client, running_simulator

KEY = "provider-key"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with running_simulator(api_key=KEY, catalogue_seed=31, loading_s=0.15) as s:
        yield s


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[VastClient]:
    async with fast_client(sim, KEY) as c:
        yield c


def label() -> str:
    return f"apothic-test-{uuid.uuid4().hex[:10]}"


def creates(sim: Simulator) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if r["method"] == "PUT" and "/asks/" in r["path"]]


async def offers(client: VastClient, n: int = 3, **filters: Any) -> list[Offer]:
    query = compile_filters(**{"max_cost_per_hour_usd": 5.0, **filters})
    ranked = rank(query, await client.search(query))
    assert len(ranked) >= n
    return ranked[:n]


async def wait_status(client: VastClient, instance_id: int, status: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = await client.show(instance_id)
        if row["actual_status"] == status:
            return row
        await asyncio.sleep(0.03)
    raise AssertionError(f"instance {instance_id} never became {status}")


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        json.dumps(data)  # events must be JSON-able (they end up in workflow events)
        self.seen.append((kind, data))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.seen]


# ---------------------------------------------------------------------------- the client


async def test_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAST_URL", raising=False)
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    with pytest.raises(VastAuthError, match="VAST_API_KEY"):
        VastClient()
    monkeypatch.setenv("VAST_API_KEY", "secret-from-env")
    default = VastClient()
    assert default.base_url == "https://console.vast.ai"
    assert default.url("/bundles/") == "https://console.vast.ai/api/v0/bundles/"
    assert default.url("/api/v1/instances/") == "https://console.vast.ai/api/v1/instances/"
    assert "secret" not in repr(default)
    await default.aclose()
    monkeypatch.setenv("VAST_URL", "http://127.0.0.1:9/")
    pointed = VastClient()
    assert pointed.url("/asks/1/") == "http://127.0.0.1:9/api/v0/asks/1/"
    await pointed.aclose()


async def test_search_sends_the_query_and_matches_what_the_catalogue_holds(sim: Simulator, client: VastClient) -> None:
    query = compile_filters(gpu=["rtx_3090", "RTX 4090"], min_vram_gb=20, max_cost_per_hour_usd=1.5,
                            geolocation=["US", "DE", "SE", "CA"], min_cpu_ram_gb=16)
    found = await client.search(query)
    assert found and all(matches(query, o) and o.provider == "vast" for o in found)
    expected = [Offer.from_vast(r) for r in sim.catalogue() if r["listed"] and not r["rented"]
                and r["verification"] == "verified" and r["rentable"] and not r["external"]]
    assert {o.offer_id for o in found} == {o.offer_id for o in rank(query, expected)}
    assert client.dropped == []


async def test_search_recheck_drops_offers_the_server_should_not_have_returned(sim: Simulator,
                                                                                 client: VastClient) -> None:
    query = compile_filters(max_cost_per_hour_usd=0.3, gpu_count=1)
    honest = {o.offer_id for o in await client.search(query)}
    sim.ignore_filter("dph_total")
    sim.ignore_filter("verified")
    checked = await client.search(query)
    assert {o.offer_id for o in checked} == honest
    assert all(o.dph_total <= 0.3 and o.verification == "verified" for o in checked)
    reasons = {reason for _, reason in client.dropped}
    assert "does not satisfy the filters" in reasons and any("verification" in r for r in reasons)
    sim.clear_faults()
    big = {o.offer_id for o in await client.search(query, disk_gb=200)}
    assert big and big < honest
    sim.ignore_filter("allocated_storage")
    assert {o.offer_id for o in await client.search(query, disk_gb=200)} == big
    assert any("disk_space" in reason for _, reason in client.dropped)


async def test_search_prices_the_disk_asked_for(client: VastClient) -> None:
    query = compile_filters(gpu_count=1)
    small = {o.offer_id: o for o in await client.search(query, limit=500)}
    large = await client.search(query, limit=500, disk_gb=100)
    assert large and all(o.disk_space_gb >= 100 for o in large)
    for o in large:
        storage = o.extra["storage_cost"] * 100 / 720
        assert o.dph_total == pytest.approx(o.extra["dph_base"] + storage, abs=1e-5)
        if o.offer_id in small:
            assert o.dph_total > small[o.offer_id].dph_total


async def test_a_bad_key_is_an_auth_error(sim: Simulator) -> None:
    async with VastClient(api_key="wrong", base_url=sim.url, retry=FAST) as bad:
        with pytest.raises(VastAuthError) as caught:
            await bad.search(compile_filters())
    assert caught.value.status == 401 and caught.value.code == "auth_error"


async def test_a_429_burst_is_retried_then_gives_a_clear_error(sim: Simulator, client: VastClient) -> None:
    sim.rate_limit(3)
    assert await client.search(compile_filters(gpu_count=1))
    assert [r["status"] for r in sim.requests()] == [429, 429, 429, 200]
    sim.rate_limit(10, style="text")
    with pytest.raises(VastRateLimited, match="after 4 attempts"):
        await client.list_instances()
    assert len(sim.requests()) == 8  # bounded: 4 attempts, no more


async def test_reads_retry_server_errors_and_lost_connections(sim: Simulator, client: VastClient) -> None:
    sim.fail_requests(2, 503, method="GET")
    assert await client.list_instances() == []
    sim.fail_requests(3, 500, method="GET")
    with pytest.raises(InstanceNotFound):
        await client.show(12345)
    sim.fail_requests(9, 502, method="GET")
    with pytest.raises(VastError) as caught:
        await client.show(12345)
    assert caught.value.status == 502
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    async with VastClient(api_key=KEY, base_url=f"http://127.0.0.1:{closed_port}", retry=FAST) as nowhere:
        with pytest.raises(VastError, match="no answer after 4 attempts"):
            await nowhere.list_instances()


async def test_create_show_list_logs_destroy(sim: Simulator, client: VastClient) -> None:
    offer = (await offers(client, 1))[0]
    name = label()
    instance_id = await client.create(offer.offer_id, image="apothic/fn:1", env={"FOO": "bar"}, disk_gb=10,
                                      onstart="echo started-$FOO; exec sleep 300", label=name)
    row = await client.show(instance_id)
    assert row["actual_status"] == "loading" and row["label"] == name and row["image_uuid"] == "apothic/fn:1"
    assert row["image_runtype"] == "args" and row["onstart"] == "/bin/sh"
    await wait_status(client, instance_id, "running")
    assert [i["id"] for i in await client.list_instances(label=name)] == [instance_id]
    assert [i["id"] for i in await client.list_instances()] == [instance_id]
    assert "started-bar" in await client.logs(instance_id, poll_s=0.02)
    pid = sim.state()["instances"][0]["pids"][0]
    await client.destroy(instance_id)
    assert marked_pids(f"{sim.token}:{instance_id}") == [] and pid not in marked_pids(sim.token)
    await client.destroy(instance_id)  # idempotent
    with pytest.raises(InstanceNotFound):
        await client.show(instance_id)
    assert sim.state()["rented_offers"] == []


async def test_an_instance_whose_script_ends_is_exited(client: VastClient) -> None:
    offer = (await offers(client, 1))[0]
    instance_id = await client.create(offer.offer_id, image="x", env={}, onstart="exit 7", disk_gb=10, label=label())
    row = await wait_status(client, instance_id, "exited")
    assert row["status_msg"] == "Exited (7)"
    await client.destroy(instance_id)


async def test_create_on_a_taken_offer_raises_offer_gone(sim: Simulator, client: VastClient) -> None:
    first, second = await offers(client, 2)
    sim.take_offer(int(first.offer_id))
    sim.take_offer(int(second.offer_id), status=410)
    for offer, status in ((first, 404), (second, 410)):
        with pytest.raises(OfferGone) as caught:
            await client.create(offer.offer_id, image="x", env={}, onstart="true", disk_gb=10, label=label())
        assert caught.value.status == status and caught.value.code == "no_such_ask"
    assert len(creates(sim)) == 2 and sim.state()["instances"] == []


async def test_create_refusals_are_errors_not_retries(sim: Simulator, client: VastClient) -> None:
    offer = (await offers(client, 1))[0]
    with pytest.raises(VastError) as caught:
        await client.create(offer.offer_id, image="x", env={}, onstart="true", disk_gb=4, label=label())
    assert caught.value.status == 400 and caught.value.code == "invalid_args" and "disk" in str(caught.value)
    with pytest.raises(ValueError, match="label"):
        await client.create(offer.offer_id, image="x", env={}, onstart="true", disk_gb=10, label="")
    assert len(creates(sim)) == 1


@pytest.mark.parametrize("mode", ["drop", "500", "delay"])
async def test_a_create_whose_answer_is_lost_is_found_by_label_not_resent(sim: Simulator, mode: str) -> None:
    async with VastClient(api_key=KEY, base_url=sim.url, retry=FAST, create_timeout_s=0.4,
                          reconcile_interval_s=0.05) as client:
        offer = (await offers(client, 1))[0]
        sim.lose_create_response(mode=mode, delay_s=1.0)
        name = label()
        instance_id = await client.create(offer.offer_id, image="x", env={}, onstart="exec sleep 300", disk_gb=10,
                                          label=name)
        assert len(creates(sim)) == 1
        assert [i["id"] for i in sim.state()["instances"]] == [instance_id]
        assert (await client.show(instance_id))["label"] == name
        await client.destroy(instance_id)


async def test_a_create_that_failed_before_creating_is_an_unknown_outcome(sim: Simulator, client: VastClient) -> None:
    offer = (await offers(client, 1))[0]
    sim.fail_requests(1, 502, method="PUT", path="/asks/")
    with pytest.raises(CreateOutcomeUnknown) as caught:
        await client.create(offer.offer_id, image="x", env={}, onstart="true", disk_gb=10, label="never-made")
    assert caught.value.label == "never-made" and "3 checks" in str(caught.value)
    assert len(creates(sim)) == 1 and sim.state()["instances"] == []


async def test_a_429_on_create_is_retried_because_nothing_was_made(sim: Simulator, client: VastClient) -> None:
    offer = (await offers(client, 1))[0]
    sim.rate_limit(2, method="PUT", path="/asks/")
    instance_id = await client.create(offer.offer_id, image="x", env={}, onstart="true", disk_gb=10, label=label())
    assert [r["status"] for r in creates(sim)] == [429, 429, 200]
    await client.destroy(instance_id)


async def test_volumes(sim: Simulator, client: VastClient) -> None:
    offer = (await offers(client, 1))[0]
    vol_offers = await client.search_volumes({"machine_id": {"eq": offer.extra["machine_id"]}})
    assert [v["id"] for v in vol_offers] == [offer.extra["avail_vol_ask_id"]]
    volume_id = await client.create_volume(vol_offers[0]["id"], size_gb=5, name="cache_1")
    assert [(v["id"], v["label"]) for v in await client.list_volumes()] == [(volume_id, "cache_1")]
    instance_id = await client.create(offer.offer_id, image="x", env={}, onstart="ls -d data && exec sleep 300",
                                      disk_gb=10, label=label(),
                                      volume={"create_new": False, "volume_id": volume_id, "mount_path": "/data"})
    await wait_status(client, instance_id, "running")
    with pytest.raises(VastError):
        await client.delete_volume(volume_id)  # attached
    await client.destroy(instance_id)
    await client.delete_volume(volume_id)
    await client.delete_volume(volume_id)  # idempotent
    assert await client.list_volumes() == []
    sim.fail_requests(1, 502, method="PUT", path="/volumes")
    with pytest.raises(CreateOutcomeUnknown):
        await client.create_volume(vol_offers[0]["id"], size_gb=1, name="cache_2")
    assert len([r for r in sim.requests() if r["method"] == "PUT" and r["path"].startswith("/api/v0/volumes")]) == 2


# ---------------------------------------------------------------------------- provision


async def test_provision_runs_the_first_offer_with_the_runtime_env(sim: Simulator, client: VastClient) -> None:
    ranked = await offers(client, 3)
    events = Events()
    env = {"APOTHIC_TEMPORAL_ADDRESS": "127.0.0.1:7233", "APOTHIC_CONTAINER_ID": "ctr-1", "APOTHIC_APP": "a b"}
    instance_id, offer = await provision(client, ranked, image="apothic/fn:1", env=env, disk_gb=10, label=label(),
                                         onstart="env > env.txt; exec sleep 300", ready_timeout_s=5,
                                         on_event=events, poll_interval_s=0.05)
    assert offer == ranked[0]
    assert events.kinds()[:2] == ["create", "created"] and events.kinds()[-1] == "running"
    assert ("status", "loading") in [(k, d.get("actual_status")) for k, d in events.seen]
    assert all("env" not in d and "ctr-1" not in json.dumps(d) for _, d in events.seen)
    workdir = Path(sim.state()["instances"][0]["workdir"])
    deadline = time.monotonic() + 5
    while not (workdir / "env.txt").exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    got = dict(line.split("=", 1) for line in (workdir / "env.txt").read_text().splitlines() if "=" in line)
    assert {k: got[k] for k in env} == env and got["VAST_CONTAINERLABEL"] == f"C.{instance_id}"
    await client.destroy(instance_id)


async def test_provision_moves_past_a_gone_offer(sim: Simulator, client: VastClient) -> None:
    ranked = await offers(client, 3)
    sim.take_offer(int(ranked[0].offer_id))
    events = Events()
    instance_id, offer = await provision(client, ranked, image="x", env={}, onstart="exec sleep 300", disk_gb=10,
                                         label=label(), ready_timeout_s=5, on_event=events, poll_interval_s=0.05)
    assert offer == ranked[1]
    assert events.kinds()[:3] == ["create", "offer_gone", "create"]
    await client.destroy(instance_id)


async def test_provision_destroys_an_instance_stuck_loading_and_tries_the_next(sim: Simulator,
                                                                               client: VastClient) -> None:
    ranked = await offers(client, 3)
    sim.stick_loading(offer_id=int(ranked[0].offer_id))
    events = Events()
    instance_id, offer = await provision(client, ranked, image="x", env={}, onstart="exec sleep 300", disk_gb=10,
                                         label=label(), ready_timeout_s=0.6, on_event=events, poll_interval_s=0.05)
    assert offer == ranked[1]
    stuck = next(d for k, d in events.seen if k == "not_ready")
    assert "not running after 0.6s" in stuck["reason"] and "loading" in stuck["reason"]
    assert ("destroyed", stuck["instance_id"]) in [(k, d.get("instance_id")) for k, d in events.seen]
    state = sim.state()
    assert [i["id"] for i in state["instances"]] == [instance_id]
    assert [i["id"] for i in state["destroyed"]] == [stuck["instance_id"]]
    # Released before the next offer is rented, not merely swept at the end.
    order = [(r["method"], r["path"]) for r in sim.requests() if r["method"] in ("PUT", "DELETE")]
    assert order[:3] == [("PUT", f"/api/v0/asks/{ranked[0].offer_id}/"),
                         ("DELETE", f"/api/v0/instances/{stuck['instance_id']}/"),
                         ("PUT", f"/api/v0/asks/{ranked[1].offer_id}/")]
    await client.destroy(instance_id)


async def test_provision_moves_past_a_host_that_dies_before_running(sim: Simulator, client: VastClient) -> None:
    ranked = await offers(client, 3)
    sim.host_dies(offer_id=int(ranked[0].offer_id), after_s=0.05)
    events = Events()
    instance_id, offer = await provision(client, ranked, image="x", env={}, onstart="exec sleep 300", disk_gb=10,
                                         label=label(), ready_timeout_s=5, on_event=events, poll_interval_s=0.05)
    assert offer == ranked[1]
    reason = next(d["reason"] for k, d in events.seen if k == "not_ready")
    assert reason.startswith("instance offline before running")
    assert len(sim.state()["instances"]) == 1
    # A host that dies after provisioning shows through show().
    sim.host_dies(instance_id=instance_id)
    assert (await client.show(instance_id))["actual_status"] == "offline"
    await client.destroy(instance_id)


async def test_provision_survives_a_lost_create_answer(sim: Simulator, client: VastClient) -> None:
    ranked = await offers(client, 2)
    sim.lose_create_response(mode="drop")
    instance_id, offer = await provision(client, ranked, image="x", env={}, onstart="exec sleep 300", disk_gb=10,
                                         label=label(), ready_timeout_s=5, poll_interval_s=0.05)
    assert offer == ranked[0] and len(creates(sim)) == 1
    assert [i["id"] for i in sim.state()["instances"]] == [instance_id]
    await client.destroy(instance_id)


async def test_provision_destroys_a_stray_with_its_label(sim: Simulator, client: VastClient) -> None:
    ranked = await offers(client, 3)
    name = label()
    stray = await client.create(ranked[2].offer_id, image="x", env={}, onstart="exec sleep 300", disk_gb=10,
                                label=name)  # as if an earlier, lost create had appeared late
    events = Events()
    instance_id, _ = await provision(client, ranked[:2], image="x", env={}, onstart="exec sleep 300", disk_gb=10,
                                     label=name, ready_timeout_s=5, on_event=events, poll_interval_s=0.05)
    assert ("stray_destroyed", stray) in [(k, d.get("instance_id")) for k, d in events.seen]
    assert [i["id"] for i in sim.state()["instances"]] == [instance_id]
    await client.destroy(instance_id)


async def test_provision_failure_lists_every_offer_and_leaves_nothing_rented(sim: Simulator,
                                                                           client: VastClient) -> None:
    ranked = await offers(client, 3)
    sim.take_offer(int(ranked[0].offer_id))
    sim.stick_loading(offer_id=int(ranked[1].offer_id))
    sim.fail_requests(1, 400, method="PUT", path=f"/asks/{ranked[2].offer_id}/")
    events = Events()
    with pytest.raises(ProvisionFailed) as caught:
        await provision(client, ranked, image="x", env={}, onstart="exec sleep 300", disk_gb=10, label=label(),
                        ready_timeout_s=0.4, on_event=events, poll_interval_s=0.05)
    attempts = caught.value.attempts
    assert [a.offer for a in attempts] == ranked
    assert attempts[0].reason.startswith("offer gone") and attempts[1].instance_id is not None
    assert "not running after" in attempts[1].reason and attempts[2].reason.startswith("create failed")
    assert "3 tried" in str(caught.value) and ranked[1].offer_id in str(caught.value)
    assert events.kinds()[-1] == "failed"
    assert sim.state()["instances"] == [] and sim.state()["rented_offers"] == []
    with pytest.raises(ProvisionFailed, match="no Vast offer"):
        await provision(client, [], image="x", env={}, onstart="true", disk_gb=10, label=label(), ready_timeout_s=1)


async def test_provision_cancelled_destroys_what_it_made(sim: Simulator, client: VastClient) -> None:
    ranked = await offers(client, 2)
    sim.stick_loading(count=5)
    created = asyncio.Event()

    async def on_event(kind: str, data: dict[str, Any]) -> None:
        if kind == "created":
            created.set()

    task = asyncio.create_task(provision(client, ranked, image="x", env={}, onstart="exec sleep 300", disk_gb=10,
                                         label=label(), ready_timeout_s=60, on_event=on_event, poll_interval_s=0.05))
    await asyncio.wait_for(created.wait(), 5)
    assert len(sim.state()["instances"]) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sim.state()["instances"] == []


async def test_provision_stops_on_errors_that_are_not_about_the_offer(sim: Simulator, client: VastClient) -> None:
    ranked = await offers(client, 2)
    sim.rate_limit(20, method="PUT")
    with pytest.raises(VastRateLimited):
        await provision(client, ranked, image="x", env={}, onstart="true", disk_gb=10, label=label(),
                        ready_timeout_s=1, poll_interval_s=0.05)
    assert len(creates(sim)) == 4  # one offer, bounded retries
    sim.clear_faults()

    def explode(kind: str, data: dict[str, Any]) -> None:
        if kind == "created":
            raise RuntimeError("heartbeat failed")

    with pytest.raises(RuntimeError, match="heartbeat"):
        await provision(client, ranked, image="x", env={}, onstart="exec sleep 300", disk_gb=10, label=label(),
                        ready_timeout_s=5, on_event=explode, poll_interval_s=0.05)
    assert sim.state()["instances"] == []
