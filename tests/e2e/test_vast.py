"""End to end on the Vast.ai simulator: a user's script with the reference's placement example
runs on the best matching simulated offer, and no instance stays rented afterwards.

The session's control worker has the vast provider on (``worker_env`` in conftest: the
simulator's URL and key); the simulator's instances are Docker containers running the image
Apothic built and pushed, so these tests need the engine that CI starts.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time

import pytest

import apothic
from apothic import App
from apothic.placement import choose, placement_query
from apothic.placement.providers import VastClient

from ..conftest import ROOT, wait_until

pytestmark = pytest.mark.usefixtures("control_worker")

PLACEMENT = dict(
    gpu=["RTX_4070", "RTX_4070S", "RTX_4070_TI", "RTX_3080", "RTX_3060", "RTX_3060_TI"],
    gpu_count=1,
    min_vram_gb=10,
    geolocation=["US", "CA"],
    max_cost_per_hour_usd=1.5,
    offer_filters={
        "num_gpus": {"gte": 1, "lte": 1},
        "gpu_ram": {"gte": 10 * 1024, "lte": 24 * 1024},
        "verification": {"eq": "verified"},
        "cpu_arch": {"eq": "amd64"},
        "pci_gen": {"gte": 3},
    },
)


def rented(sim) -> list[dict]:
    return [i for i in sim.state()["instances"] if not i["destroyed"]]


def best_offer(sim) -> str:
    async def search() -> str:
        query = placement_query(PLACEMENT, cpu=1, memory_mb=1024)
        async with VastClient(sim.api_key, sim.url) as client:
            return choose(query, await client.search(query, limit=64))[0].offer_id

    return asyncio.run(search())


def test_the_reference_placement_example_runs_on_the_best_simulated_offer(app_name: str, vast_sim) -> None:
    script = textwrap.dedent(f"""
        import os, socket
        from apothic import App

        app = App({app_name!r})

        @app.function(**{PLACEMENT!r})
        def inspect_capacity() -> dict:
            return {{"ok": "ok", "marker": os.environ.get("VASTSIM_MARKER", ""), "docker": os.path.exists("/.dockerenv")}}

        if __name__ == "__main__":
            app.deploy()
            print(inspect_capacity.remote(timeout_s=900))
    """)
    expected = best_offer(vast_sim)  # before it is rented (a rented offer leaves the search)
    path = ROOT / ".pytest-scripts" / f"{app_name}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(script)
    try:
        proc = subprocess.run(
            [sys.executable, str(path)], capture_output=True, text=True, env=dict(os.environ), cwd=str(ROOT),
            timeout=900,
        )
    finally:
        path.unlink()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = eval(proc.stdout.strip().splitlines()[-1])  # noqa: S307 - our own script's dict
    assert out["ok"] == "ok" and out["docker"] is True
    instance_id = int(out["marker"].rsplit(":", 1)[1])
    (inst,) = [i for i in vast_sim.state()["instances"] if i["id"] == instance_id]
    assert str(inst["offer_id"]) == expected
    assert "127.0.0.1:5000/" in inst["image"]  # pulled from the registry Apothic pushed to
    # After its idle window the container drains and the instance is destroyed.
    wait_until(lambda: not rented(vast_sim), timeout=90, what="no rented instance")


def test_failure_and_cancel_leave_nothing_rented(app_name: str, vast_sim) -> None:
    app = App(app_name)

    @app.function(gpu="RTX_3060", max_cost_per_hour_usd=1.5, timeout_s=120)
    def work(x: int) -> int:
        if x < 0:
            raise ValueError(f"negative: {x}")
        time.sleep(x)
        return x

    app.deploy()
    # The job's events tell where and how it was placed, in order.
    events = list(work.remote_events(0, snapshot=True))  # from `queued` on
    kinds = [e.event for e in events]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    for step in ("queued", "placement", "provisioning", "container", "started", "completed"):
        assert step in kinds, kinds
    assert kinds.index("provisioning") < kinds.index("started") < kinds.index("completed") == len(kinds) - 1
    placed = [e.data for e in events if e.event == "placement" and e.data.get("provider")]
    assert placed and placed[0]["provider"] == "vast" and placed[0]["gpu_name"] == "RTX 3060"
    with pytest.raises(ValueError, match="negative: -1"):
        work.remote(-1, timeout_s=900)
    job = work.spawn(110)  # far longer than the waits below: only the cancel can end it in time
    wait_until(lambda: job.status().value == "running", timeout=120, what="the job to run")
    job.cancel()
    with pytest.raises(apothic.JobCancelledError):  # a timeout would raise CallTimeoutError
        job.wait(timeout_s=60)
    assert job.status() is apothic.JobStatus.CANCELLED
    wait_until(lambda: not rented(vast_sim), timeout=120, what="no rented instance")


def test_an_offer_taken_between_search_and_create_moves_to_the_next(app_name: str, vast_sim) -> None:
    app = App(app_name)

    @app.function(**PLACEMENT)
    def where() -> str:
        return os.environ.get("VASTSIM_MARKER", "")

    app.deploy()
    best = best_offer(vast_sim)
    vast_sim.take_offer(int(best))
    try:
        marker = where.remote(timeout_s=900)
    finally:
        vast_sim.clear_faults()
    (inst,) = [i for i in vast_sim.state()["instances"] if i["id"] == int(marker.rsplit(":", 1)[1])]
    assert str(inst["offer_id"]) != best
    wait_until(lambda: not rented(vast_sim), timeout=90, what="no rented instance")


def test_no_matching_offer_explains_each_constraint(app_name: str) -> None:
    app = App(app_name)

    @app.function(gpu="H100_SXM", max_cost_per_hour_usd=0.05)
    def cheap() -> None: ...

    app.deploy()
    with pytest.raises(apothic.ApothicError) as info:
        cheap.remote(timeout_s=300)
    text = str(info.value)
    assert "no machine matches" in text
    assert "not matching gpu" in text and "over max_cost_per_hour_usd" in text


def test_apothic_offers_ranks_the_offers_a_function_would_get(vast_sim, tmp_path) -> None:
    env = dict(os.environ, VAST_URL=vast_sim.url, VAST_API_KEY=vast_sim.api_key)
    apothic_cli = [sys.executable, "-c", "from apothic._cli._cli import run; run()"]

    def offers(*args: str) -> dict:
        proc = subprocess.run([*apothic_cli, "offers", *args, "--json"], capture_output=True, text=True, env=env,
                              cwd=str(ROOT), timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return __import__("json").loads(proc.stdout)

    flags = offers("--gpu", "RTX_3060", "--max-cost-per-hour-usd", "1.5", "--filter", "pci_gen:gte:3")
    assert flags["matched"] > 0 and "vast" in flags["providers"]
    rows = flags["offers"]
    assert all(r["gpu_name"] == "RTX 3060" and r["dph_total"] <= 1.5 and r["provider"] == "vast" for r in rows)
    assert [r["dph_total"] for r in rows] == sorted(r["dph_total"] for r in rows)

    app_file = tmp_path / "placed.py"
    app_file.write_text(textwrap.dedent(f"""
        from apothic import App
        app = App("offers-demo")

        @app.function(**{PLACEMENT!r})
        def inspect_capacity() -> str:
            return "ok"
    """))
    by_function = offers(f"{app_file}::inspect_capacity")
    assert by_function["offers"][0]["offer_id"] == best_offer(vast_sim)
    # Without a GPU filter this host comes first: it costs nothing.
    assert offers("--limit", "3")["offers"][0]["provider"] == "process"

    proc = subprocess.run([*apothic_cli, "offers", "--gpu", "H100", "--max-cost-per-hour-usd", "0.01"],
                          capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=120)
    assert proc.returncode == 1
    assert "not matching gpu" in proc.stdout and "over max_cost_per_hour_usd" in proc.stdout


def test_a_host_that_dies_mid_run_is_replaced_and_the_input_reruns(app_name: str, vast_sim) -> None:
    app = App(app_name)

    @app.function(gpu="RTX_3060", max_cost_per_hour_usd=1.5, timeout_s=120)
    def slow() -> str:
        time.sleep(6)
        return os.environ.get("VASTSIM_MARKER", "")

    app.deploy()
    job = slow.spawn()
    wait_until(lambda: job.status().value == "running", timeout=180, what="the job to run")
    (first,) = rented(vast_sim)
    vast_sim.host_dies(instance_id=first["id"])
    marker = job.wait(timeout_s=600)
    assert int(marker.rsplit(":", 1)[1]) != first["id"]  # it ran again, on another machine
    wait_until(lambda: not rented(vast_sim), timeout=120, what="no rented instance")
