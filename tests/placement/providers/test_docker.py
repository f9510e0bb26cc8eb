"""The docker provider against the real local engine (``scripts/docker-services`` sets it up).

Without an engine these tests fail, naming the fix; they are never skipped.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from apothic.placement import Offer
from apothic.placement.providers.docker import (
    CONTAINER_LABEL,
    ContainerStartFailed,
    DockerProvider,
)
from apothic.placement.providers.images import ensure_image

from apothic import Image

from .conftest import BASE, docker_engine


@pytest.fixture(scope="module")
def engine():
    return docker_engine(timeout=30)


@pytest.fixture(scope="module")
def provider(engine) -> DockerProvider:
    return DockerProvider(engine)


@pytest.fixture
def cid(engine):
    """A fresh container id; whatever carries it is removed after the test."""
    container_id = f"t-{uuid.uuid4().hex[:10]}"
    yield container_id
    for ct in engine.containers.list(all=True, filters={"label": f"{CONTAINER_LABEL}={container_id}"}):
        ct.remove(force=True)


def _labelled(engine, container_id: str) -> list:
    return engine.containers.list(all=True, filters={"label": f"{CONTAINER_LABEL}={container_id}"})


async def test_offer_describes_this_host(provider, engine):
    offers = await provider.list_offers()
    info = engine.info()
    assert len(offers) == 1
    offer = offers[0]
    assert isinstance(offer, Offer)
    assert offer.provider == "docker" and offer.dph_total == 0.0
    assert offer.cpu_cores == float(info["NCPU"])
    assert abs(offer.cpu_ram_gb - info["MemTotal"] / 1e9) < 0.01
    assert offer.num_gpus == len(provider.host_gpus())
    assert offer.extra["disk_quota"] is provider.disk_quota()[0]


async def test_env_reaches_the_command_and_labels_find_it(provider, engine, cid):
    env = {"APOTHIC_APP": "demo", "APOTHIC_FUNCTION": "f", "APOTHIC_VERSION": "3", "MARKER": "m-42"}
    handle = await provider.start(
        cid,
        env,
        image_ref=BASE,
        cpu=1,
        memory_mb=256,
        command=["sh", "-c", "echo marker=$MARKER id=$APOTHIC_CONTAINER_ID"],
    )
    assert await provider.wait(handle, 30) == 0
    assert f"marker=m-42 id={cid}" in provider.log_tail(cid)
    (ct,) = _labelled(engine, cid)
    assert ct.labels["apothic.app"] == "demo" and ct.labels["apothic.version"] == "3"
    assert ct.labels["apothic.provider"] == "docker"
    assert ct.attrs["HostConfig"]["NetworkMode"] == "host"
    assert provider.exit_status(cid) == 0


async def test_cpu_and_memory_limits_are_visible_inside(provider, cid):
    script = (
        "if [ -f /sys/fs/cgroup/cpu.max ]; then echo cpu $(cat /sys/fs/cgroup/cpu.max); "
        "else echo cpu $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us); fi; "
        "if [ -f /sys/fs/cgroup/memory.max ]; then echo mem $(cat /sys/fs/cgroup/memory.max); "
        "else echo mem $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); fi"
    )
    handle = await provider.start(
        cid, {}, image_ref=BASE, cpu=0.5, memory_mb=300, command=["sh", "-c", script]
    )
    assert await provider.wait(handle, 30) == 0
    lines = dict(line.split(" ", 1) for line in provider.log_tail(cid).splitlines() if " " in line)
    quota, period = (int(x) for x in lines["cpu"].split())
    assert quota / period == pytest.approx(0.5)
    assert int(lines["mem"]) == 300 * 1024 * 1024


async def test_disk_limit_is_applied_or_reported(provider, engine, cid):
    handle = await provider.start(cid, {}, image_ref=BASE, cpu=0, memory_mb=0, disk_gb=2, command=["true"])
    await provider.wait(handle, 30)
    supported, why = provider.disk_quota()
    (ct,) = _labelled(engine, cid)
    if supported:
        assert ct.attrs["HostConfig"]["StorageOpt"] == {"size": "2048M"}
    else:
        assert handle.notes and "disk_gb=2 is not enforced" in handle.notes[0] and why in handle.notes[0]
        assert not ct.attrs["HostConfig"].get("StorageOpt")


async def test_more_gpus_than_the_host_has_fail_clearly(provider, cid):
    have = len(provider.host_gpus())
    with pytest.raises(ContainerStartFailed, match="GPU"):
        await provider.start(cid, {}, image_ref=BASE, cpu=1, memory_mb=128, gpus=have + 1, command=["true"])


async def test_missing_image_fails_clearly(provider, cid):
    with pytest.raises(ContainerStartFailed, match="not on this Docker engine"):
        await provider.start(
            cid, {}, image_ref="apothic-test/missing:0", cpu=1, memory_mb=128, command=["true"]
        )


async def test_stop_drains_with_sigterm(provider, cid):
    code = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); "
        "print('up', flush=True); time.sleep(120)"
    )
    handle = await provider.start(
        cid, {}, image_ref=BASE, cpu=1, memory_mb=128, command=["python3", "-c", code]
    )
    deadline = time.monotonic() + 20
    while "up" not in provider.log_tail(cid) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    started = time.monotonic()
    assert await provider.stop(handle, grace_s=20) == 7
    assert time.monotonic() - started < 10


async def test_stop_kills_after_grace_and_ticks_meanwhile(provider, engine, cid):
    ticks = []
    handle = await provider.start(
        cid,
        {},
        image_ref=BASE,
        cpu=1,
        memory_mb=128,
        command=["sh", "-c", "trap '' TERM; while :; do sleep 1; done"],
    )
    started = time.monotonic()
    code = await provider.stop(handle, grace_s=4.5, tick=lambda: ticks.append(time.monotonic()))
    elapsed = time.monotonic() - started
    assert code == 137  # SIGKILL
    assert 4.0 <= elapsed < 15
    assert len(ticks) >= 2
    assert provider.release(cid) and not _labelled(engine, cid)


async def test_release_removes_running_containers_and_is_idempotent(provider, engine, cid):
    await provider.start(cid, {}, image_ref=BASE, cpu=1, memory_mb=128, command=["sleep", "300"])
    assert provider.adopt(cid) is not None
    assert len(_labelled(engine, cid)) == 1
    assert len(provider.release(cid)) == 1
    assert _labelled(engine, cid) == []
    assert provider.release(cid) == []
    assert provider.adopt(cid) is None and provider.log_tail(cid) == ""


async def test_start_again_replaces_a_leftover(provider, engine, cid):
    await provider.start(cid, {}, image_ref=BASE, cpu=1, memory_mb=128, command=["sleep", "300"])
    handle = await provider.start(cid, {}, image_ref=BASE, cpu=1, memory_mb=128, command=["true"])
    assert await provider.wait(handle, 30) == 0
    assert len(_labelled(engine, cid)) == 1


@pytest.fixture(scope="module")
async def derived_ref(engine):
    return await ensure_image(Image.debian_slim("3.11").env(APOTHIC_TEST_DERIVED="1"), registry=None)


@pytest.mark.parametrize("kind", ["base image, host runtime mounted", "derived image with its runtime"])
async def test_runtime_in_container_reaches_temporal_on_loopback(provider, temporal, derived_ref, cid, kind):
    """The runtime connects over the host network, then finds that the app is not deployed."""
    if kind.startswith("base"):
        ref = await ensure_image(Image.debian_slim("3.11"), registry=None)
        assert not ref.has_runtime
    else:
        ref = derived_ref
        assert ref.has_runtime
    app = f"no-such-app-{uuid.uuid4().hex[:6]}"
    env = {
        "APOTHIC_TEMPORAL_ADDRESS": temporal,
        "APOTHIC_TEMPORAL_NAMESPACE": "default",
        "APOTHIC_APP": app,
        "APOTHIC_FUNCTION": "f",
        "APOTHIC_VERSION": "1",
        "APOTHIC_TASK_QUEUE": f"q-{app}",
        "APOTHIC_CONCURRENCY": "1",
        "APOTHIC_IDLE_S": "5",
    }
    handle = await provider.start(cid, env, image_ref=ref, cpu=1, memory_mb=512)
    code = await provider.wait(handle, 60)
    logs = provider.log_tail(cid, 20000)
    assert code not in (None, 0), logs
    assert "cannot reach the Temporal server" not in logs, logs
    assert app in logs or "not found" in logs.lower(), logs
    provider.release(cid)
