"""Permanent start failures fail the job within seconds, with the failing step and its output,
and rent nothing (more); transient ones are retried.

Permanent: a base image that does not exist, an apt package that does not exist (both fail the
image build, which runs before any rental), an image the rented host cannot pull (the
simulator's ``fail_pull``: ``manifest unknown`` in the instance's ``status_msg``), no offer
matching at all. Transient: the best offer's host dies while the instance loads; the job
still runs, on the next offer.

Real parts: the session's Temporal dev server and control worker, Docker (image builds, the
local registry), the Vast.ai simulator whose instances are Docker containers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from apothic.placement import choose, placement_query
from apothic.placement.providers import VastClient

import apothic
from apothic import App, Image

from ..conftest import wait_until

pytestmark = pytest.mark.usefixtures("control_worker")

# Within seconds: well under the fleet's three tries with their backoff, and nowhere near the
# ready (600 s) or startup timeouts.
FAST_S = 30.0


def ours(sim: Any, app: str) -> list[Any]:
    found = list(sim.instances.values()) + list(sim.destroyed.values())
    return sorted((i for i in found if i.env.get("APOTHIC_APP") == app), key=lambda i: i.id)


def fails_fast(fn: Any, capsys: Any, what: str, *messages: str) -> list[Any]:
    """Run ``fn``: it fails with PlacementError naming ``messages``, at its first start, within
    ``FAST_S`` of the failing step (an image build's own time comes before). Its events."""
    started = time.monotonic()
    job = fn.spawn()
    with pytest.raises(apothic.PlacementError) as caught:
        job.wait(timeout_s=600)
    took = time.monotonic() - started
    events = list(job.watch(snapshot=True))
    text = str(caught.value)
    assert "(a start that cannot succeed)" in text, text
    for message in messages:
        assert message in text, text
    builds = [e for e in events if e.event == "image" and e.data.get("status") == "building"]
    failed_build = [e for e in events if e.event == "image" and e.data.get("status") == "failed"]
    assert len(builds) <= 1, builds  # one start, not container after container
    after = (events[-1].timestamp - failed_build[0].timestamp).total_seconds() if failed_build else took
    with capsys.disabled():
        print(f"\n[measure] {what}: the job failed {took:.1f} s after its submission, "
              f"{after:.1f} s after the failing step")
    assert after < FAST_S, f"{what}: {after:.1f} s after the failing step"
    return events


def test_a_base_image_that_does_not_exist(app_name: str, vast_sim, capsys) -> None:
    app = App(app_name)
    image = Image.from_registry("127.0.0.1:5000/apothic-tests/no-such-base:1", add_python="3.11")

    @app.function(gpu="RTX_3060", max_cost_per_hour_usd=1.5, image=image)
    def work() -> int:
        return 1

    app.deploy()
    fails_fast(work, capsys, "missing base image", "building image", "no-such-base")
    assert ours(vast_sim, app_name) == []  # nothing rented


def test_an_apt_package_that_does_not_exist(app_name: str, vast_sim, capsys) -> None:
    app = App(app_name)
    image = Image.debian_slim(python_version="3.11").apt_install("apothic-no-such-package")

    @app.function(gpu="RTX_3060", max_cost_per_hour_usd=1.5, image=image)
    def work() -> int:
        return 1

    app.deploy()
    fails_fast(work, capsys, "apt package that does not exist", "building image",
               "Unable to locate package apothic-no-such-package")
    assert ours(vast_sim, app_name) == []


def test_an_image_the_rented_host_cannot_pull(app_name: str, vast_sim, capsys) -> None:
    app = App(app_name)

    @app.function(gpu="RTX_3060", max_cost_per_hour_usd=1.5)
    def work() -> int:
        return 1

    app.deploy()
    vast_sim.fail_pull(count=0)  # every create: the host's registry has no such image
    try:
        fails_fast(work, capsys, "image the host cannot pull", "pulling the image failed", "manifest unknown")
    finally:
        vast_sim.clear_faults()
    rented = ours(vast_sim, app_name)
    assert len(rented) == 1 and rented[0].destroyed  # one rental, destroyed; no second offer tried


def test_no_offer_matching_at_all(app_name: str, vast_sim, capsys) -> None:
    app = App(app_name)

    @app.function(gpu="H100_SXM", max_cost_per_hour_usd=0.01)
    def work() -> int:
        return 1

    app.deploy()
    fails_fast(work, capsys, "no offer matching", "no machine matches")
    assert ours(vast_sim, app_name) == []


def best_offer(sim: Any, placement: dict[str, Any]) -> str:
    """The offer the control worker will rent first for ``placement`` (one ranking, as it does)."""

    async def search() -> str:
        query = placement_query(placement, cpu=1, memory_mb=1024)
        async with VastClient(sim.api_key, sim.url) as client:
            return choose(query, await client.search(query, limit=64))[0].offer_id

    return asyncio.run(search())


def test_a_host_that_dies_while_loading_is_retried_on_the_next_offer(app_name: str, vast_sim) -> None:
    app = App(app_name)
    placement = {"gpu": "RTX_3060", "max_cost_per_hour_usd": 1.5}

    @app.function(**placement, timeout_s=120)
    def work() -> str:
        import os

        return os.environ.get("VASTSIM_MARKER", "")

    app.deploy()
    best = best_offer(vast_sim, placement)
    vast_sim.host_dies(offer_id=int(best), after_s=0.1)  # while its instance loads (0.5 s)
    try:
        marker = work.remote(timeout_s=600)
    finally:
        vast_sim.clear_faults()
    ran_on = int(marker.rsplit(":", 1)[1])
    first, *rest = ours(vast_sim, app_name)
    assert str(first.ask.id) == best and first.actual_status == "offline" and first.destroyed
    assert [i.id for i in rest] == [ran_on]  # the next offer, in the same start
    wait_until(lambda: all(i.destroyed for i in ours(vast_sim, app_name)), timeout=120,
               what="every instance destroyed after its idle window")
