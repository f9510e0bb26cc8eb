"""The official ``vastai`` client (CLI and SDK) against the simulator: the simulator's fidelity.

The CLI runs as a subprocess with ``VAST_URL``/``VAST_API_KEY`` (or ``--url``/``--api-key``),
a private HOME and no update check; the SDK runs in-process as ``vastai.VastAI``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from apothic.vastsim import Simulator, marked_pids
from vastai import VastAI

from .running import running_simulator

KEY = "fidelity-key"
VASTAI = str(Path(sys.executable).parent / "vastai")


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with running_simulator(api_key=KEY, catalogue_seed=23, loading_s=0.15) as s:
        yield s


@pytest.fixture
def cli(sim: Simulator, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    home = tmp_path / "home"
    home.mkdir()

    def run(*args: str, env_auth: bool = True) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "VASTAI_NO_UPDATE_CHECK": "1",
               "CI": "1", "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache"),
               "XDG_STATE_HOME": str(home / ".state"), "COLUMNS": "200"}
        if env_auth:
            env.update(VAST_URL=sim.url, VAST_API_KEY=KEY)
        return subprocess.run([VASTAI, *args], env=env, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    return run


@pytest.fixture
def sdk(sim: Simulator) -> VastAI:
    # The client reads VAST_URL at import time, so the SDK gets the URL explicitly.
    return VastAI(api_key=KEY, server_url=sim.url, raw=True)


def raw(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_cli_search_offers_with_a_query_string(sim: Simulator, cli: Callable[..., Any]) -> None:
    offers = raw(cli("search", "offers", "gpu_name=RTX_3090 num_gpus>=1 reliability>0.8 cpu_ram>=64 "
                     "geolocation in [US,CA,DE,SE,NL,GB]", "-o", "dph_total", "--raw"))
    want = {o["id"] for o in sim.catalogue() if o["listed"] and not o["rented"] and o["gpu_name"] == "RTX 3090"
            and o["reliability"] > 0.8 and o["cpu_ram"] >= 64_000 and o["geolocation"][-2:] in
            ("US", "CA", "DE", "SE", "NL", "GB") and o["geolocation"][-4:-2] == ", "
            and o["verification"] == "verified" and o["rentable"] and not o["external"]}
    assert want, "the query should match some offers of this catalogue"
    assert {o["id"] for o in offers} == want
    assert [o["dph_total"] for o in offers] == sorted(o["dph_total"] for o in offers)
    # The CLI's default pricing storage is 5 GB.
    assert all(o["storage_total_cost"] == pytest.approx(o["storage_cost"] * 5 / 720, abs=1e-6) for o in offers)
    table = cli("search", "offers", "num_gpus=1", "--limit", "3")
    assert table.returncode == 0 and len([line for line in table.stdout.splitlines() if " 1x " in line]) == 3, table


def test_cli_create_show_logs_destroy(sim: Simulator, cli: Callable[..., Any]) -> None:
    offer = raw(cli("search", "offers", "num_gpus=1", "-o", "dph_total", "--limit", "1", "--raw"))[0]
    made = raw(cli("create", "instance", str(offer["id"]), "--image", "vastsim/test:1", "--disk", "12",
                   "--label", "cli-made", "--env", "-e FOO=bar -p 8000:8000",
                   "--onstart-cmd", "echo hello-$FOO; echo hello-$FOO > out.txt", "--raw"))
    assert made["success"] is True
    instance_id = made["new_contract"]
    wait_for(lambda: [i for i in sim.state()["instances"] if i["actual_status"] == "running"], what="running")
    rows = raw(cli("show", "instances", "--raw"))
    assert [r["id"] for r in rows] == [instance_id]
    row = rows[0]
    assert row["label"] == "cli-made" and row["image_uuid"] == "vastsim/test:1" and row["disk_space"] == 12
    assert row["extra_env"] == {"FOO": "bar", "-p 8000:8000": "1"}  # the CLI turned [k, v] pairs into a dict
    assert row["image_runtype"] == "ssh"  # the CLI's default: onstart runs beside the ssh daemon
    assert row["machine_id"] == offer["machine_id"]
    workdir = Path(sim.state()["instances"][0]["workdir"])
    assert wait_for(lambda: (workdir / "out.txt").exists() and (workdir / "out.txt").read_text()) == "hello-bar\n"
    logs = cli("logs", str(instance_id))
    assert logs.returncode == 0 and "hello-bar" in logs.stdout, logs.stderr
    table = cli("show", "instances")
    assert table.returncode == 0 and "cli-made" in table.stdout, table.stderr
    gone = cli("destroy", "instance", str(instance_id), "-y")  # (--raw prints nothing for this command)
    assert gone.returncode == 0 and f"destroying instance {instance_id}." in gone.stdout, gone.stderr
    assert raw(cli("show", "instance", str(instance_id), "--raw")) == {"instances": None}
    assert sim.state()["instances"] == [] and sim.state()["rented_offers"] == []


def test_cli_url_and_key_flags_and_a_bad_key(sim: Simulator, cli: Callable[..., Any]) -> None:
    assert raw(cli("show", "instances", "--raw", "--url", sim.url, "--api-key", KEY, env_auth=False)) == []
    bad = cli("show", "instances", "--url", sim.url, "--api-key", "wrong", env_auth=False)
    assert "401" in bad.stdout + bad.stderr and "Invalid user key" in bad.stdout + bad.stderr
    assert [r["method"] for r in sim.requests() if r["status"] == 401]


def test_sdk_search_create_show_logs_destroy(sim: Simulator, sdk: VastAI) -> None:
    offers = sdk.search_offers("num_gpus=1 gpu_name=RTX_3090", order="dph_total", limit=5)
    assert offers and all(o["gpu_name"] == "RTX 3090" and o["num_gpus"] == 1 for o in offers)
    assert all(o["datacenter"] == (o["hosting_type"] == 1) for o in offers)  # the SDK's own post-processing
    made = sdk.create_instance(offers[0]["id"], image="vastsim/test:2", disk=10, label="sdk-made", runtype="args",
                               onstart_cmd="/bin/sh", args=["-c", "echo sdk-$FOO; sleep 300"], env={"FOO": "x"})
    instance_id = made["new_contract"]
    row = wait_for(lambda: (r := sdk.show_instance(instance_id)) and r["actual_status"] == "running" and r,
                   what="running")
    assert row["extra_env"] == {"FOO": "x"} and row["image_args"] == ["-c", "echo sdk-$FOO; sleep 300"]
    assert [r["id"] for r in sdk.show_instances()] == [instance_id]
    assert "sdk-x" in wait_for(lambda: (text := sdk.logs(instance_id)) and "sdk-x" in text and text, what="logs")
    pid = sim.state()["instances"][0]["pids"][0]
    assert sdk.destroy_instance(instance_id) == {"success": True}
    assert sdk.show_instance(instance_id) is None
    assert pid not in marked_pids(sim.token)


def test_sdk_retries_a_short_429_burst_and_reports_offer_gone(sim: Simulator, sdk: VastAI) -> None:
    sim.rate_limit(2)
    assert sdk.show_instances() == []
    assert [r["status"] for r in sim.requests()[-3:]] == [429, 429, 200]
    offer = sdk.search_offers("num_gpus=1", order="dph_total", limit=1)[0]
    sim.take_offer(offer["id"])
    with pytest.raises(requests.HTTPError) as caught:
        sdk.create_instance(offer["id"], image="x", disk=10)
    assert caught.value.response.status_code == 404 and caught.value.response.json()["error"] == "no_such_ask"


def test_sdk_volumes(sim: Simulator, sdk: VastAI) -> None:
    vol_offers = sdk.search_volumes("disk_space>=100", order="storage_cost", limit=3)
    assert vol_offers and all(v["disk_space"] >= 100 for v in vol_offers)
    made = sdk.create_volume(vol_offers[0]["id"], size=20, name="sdk_vol")
    assert made["success"] is True and made["volume_name"].startswith("V.")
    vols = sdk.show_volumes()
    assert [(v["label"], v["disk_space"], v["status"]) for v in vols] == [("sdk_vol", 20, "available")]
    assert sdk.delete_volume(vols[0]["id"]) == {"success": True}
    assert sdk.show_volumes() == []
