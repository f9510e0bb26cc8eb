"""The Vast.ai API simulator over real HTTP, with real instance processes and injected faults."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from apothic.vastsim import Simulator, build_catalogue, docker_available, marked_pids

KEY = "test-key"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A simulator with a large search cap (to compare whole result sets) and short loading."""
    s = Simulator(api_key=KEY, catalogue_seed=11, loading_s=0.15, search_limit=1000)
    s.start()
    try:
        yield s
    finally:
        pids = [p for i in s.state()["instances"] + s.state()["destroyed"] for p in i["pids"]]
        s.stop()
        assert marked_pids(s.token + ":") == [], "an instance process outlived the simulator"
        assert not [p for p in pids if _alive(p)], "an instance process outlived the simulator"


@pytest.fixture
def api(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as client:
        yield client


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.03)
    raise AssertionError(f"timed out waiting for {what}")


def search(api: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    r = api.post("/api/v0/bundles/", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return r.json()["offers"]


def ids(offers: list[dict[str, Any]]) -> set[int]:
    return {o["id"] for o in offers}


def listed(sim: Simulator, keep: Callable[[dict[str, Any]], bool]) -> set[int]:
    """Ids of the listed, unrented offers that ``keep`` accepts: what a search must return."""
    return {o["id"] for o in sim.catalogue() if o["listed"] and not o["rented"] and keep(o)}


def show(api: httpx.Client, instance_id: int) -> dict[str, Any] | None:
    r = api.get(f"/api/v0/instances/{instance_id}/", params={"owner": "me"})
    assert r.status_code == 200, r.text
    return r.json()["instances"]


def create(api: httpx.Client, offer_id: int, **body: Any) -> httpx.Response:
    body.setdefault("image", "vastsim/test:latest")
    body.setdefault("disk", 10)
    return api.put(f"/api/v0/asks/{offer_id}/", json=body)


def cheapest(api: httpx.Client, **filters: Any) -> dict[str, Any]:
    return search(api, {**filters, "order": [["dph_total", "asc"]], "limit": 1})[0]


def run_script(api: httpx.Client, script: str, *, label: str = "t", env: dict[str, str] | None = None,
               offer: dict[str, Any] | None = None) -> int:
    offer = offer or cheapest(api)
    r = create(api, offer["id"], runtype="args", onstart="/bin/sh", args=["-c", script], label=label,
               env=env or {})
    assert r.status_code == 200, r.text
    return r.json()["new_contract"]


# ---------------------------------------------------------------------------- catalogue


def test_catalogue_is_deterministic_realistic_and_in_api_units() -> None:
    machines, asks = build_catalogue(5, now=1_000_000.0)
    _, again = build_catalogue(5, now=1_000_000.0)
    _, other = build_catalogue(6, now=1_000_000.0)
    assert [a.row for a in asks] == [a.row for a in again]
    assert [a.id for a in asks] != [a.id for a in other]
    assert len(asks) >= 100 and len({a.id for a in asks}) == len(asks)
    rows = [a.row for a in asks]
    names = {r["gpu_name"] for r in rows}
    assert {"RTX 4090", "RTX 3090", "A100 SXM4", "H100 SXM"} <= names and len(names) >= 12
    assert {r["num_gpus"] for r in rows} >= {1, 2, 4, 8}
    assert {r["hosting_type"] for r in rows} == {0, 1}
    assert {r["verification"] for r in rows} == {"verified", "unverified", "deverified"}
    assert all(r["geolocation"][-4:-2] == ", " for r in rows if r["geolocation"] != "California, United States")
    for r in rows:
        assert r["gpu_total_ram"] == r["gpu_ram"] * r["num_gpus"]
        assert r["cpu_cores_effective"] <= r["cpu_cores"]
        assert 0.0 < r["reliability"] <= 1.0 and r["id"] == r["ask_contract_id"]
        assert r["cpu_ram"] >= 64 * 1024  # MB of the whole host
    assert {r["gpu_ram"] for r in rows if r["gpu_name"] == "RTX 4090"} == {24564}  # MB as the driver reports


# ---------------------------------------------------------------------------- auth


def test_auth_bearer_legacy_param_and_bad_key(sim: Simulator) -> None:
    url = f"{sim.url}/api/v0/bundles/"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = httpx.post(url, json={}, headers=headers)
        assert r.status_code == 401
        assert r.json() == {"success": False, "error": "auth_error", "msg": "Invalid user key"}
    assert httpx.post(url, json={"limit": 1}, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.post(url, json={"limit": 1}, params={"api_key": KEY}).status_code == 200
    assert httpx.get(f"{sim.url}/api/v0/instances/1/", params={"api_key": "nope"}).status_code == 401
    assert httpx.delete(f"{sim.url}/api/v0/instances/1/").status_code == 401
    assert httpx.get(f"{sim.url}/api/v0/nothing/here/").status_code == 404


# ---------------------------------------------------------------------------- search semantics


@pytest.mark.parametrize("op, value, keep", [
    ("eq", 2, lambda o: o["num_gpus"] == 2),
    ("neq", 1, lambda o: o["num_gpus"] != 1),
    ("gt", 4, lambda o: o["num_gpus"] > 4),
    ("gte", 4, lambda o: o["num_gpus"] >= 4),
    ("lt", 2, lambda o: o["num_gpus"] < 2),
    ("lte", 2, lambda o: o["num_gpus"] <= 2),
    ("in", [1, 8], lambda o: o["num_gpus"] in (1, 8)),
    ("notin", [1, 8], lambda o: o["num_gpus"] not in (1, 8)),
])
def test_each_operator_returns_exactly_the_matching_offers(sim: Simulator, api: httpx.Client, op: str,
                                                           value: Any, keep: Callable[[dict], bool]) -> None:
    got = ids(search(api, {"num_gpus": {op: value}}))
    assert got == listed(sim, keep)
    assert got, "the operator test needs at least one matching offer"


def test_several_operators_on_one_field_and_numbers_sent_as_text(sim: Simulator, api: httpx.Client) -> None:
    want = listed(sim, lambda o: 10000 <= o["gpu_ram"] <= 24576 and o["dph_total"] < 0.5)
    assert ids(search(api, {"gpu_ram": {"gte": 10000, "lte": 24576}, "dph_total": {"lt": 0.5}})) == want
    # The official CLI sends the numbers of a query string as text.
    assert ids(search(api, {"gpu_ram": {"gte": "10000", "lte": "24576"}, "dph_total": {"lt": "0.5"}})) == want
    assert ids(search(api, {"rentable": {"eq": "true"}, "num_gpus": {"in": ["2", "4"]}})) == listed(
        sim, lambda o: o["rentable"] and o["num_gpus"] in (2, 4))


def test_gpu_names_are_compared_with_spaces(sim: Simulator, api: httpx.Client) -> None:
    want = listed(sim, lambda o: o["gpu_name"] in ("RTX 4090", "A100 SXM4"))
    assert want and ids(search(api, {"gpu_name": {"in": ["RTX 4090", "A100 SXM4"]}})) == want
    assert search(api, {"gpu_name": {"eq": "RTX_4090"}}) == []
    ti = listed(sim, lambda o: o["gpu_name"] == "RTX 3080 Ti")
    assert ids(search(api, {"gpu_name": {"eq": "RTX 3080 Ti"}})) == ti


def test_geolocation_matches_the_trailing_country_code(sim: Simulator, api: httpx.Client) -> None:
    us = search(api, {"geolocation": {"eq": "US"}})
    assert us and all(o["geolocation"].endswith(", US") for o in us)
    assert ids(us) == listed(sim, lambda o: o["geolocation"].endswith(", US"))
    assert "California, United States" not in {o["geolocation"] for o in us}
    eu = search(api, {"geolocation": {"in": ["de", "NL", "SE"]}})
    assert ids(eu) == listed(sim, lambda o: o["geolocation"][-2:] in ("DE", "NL", "SE"))
    rest = search(api, {"geolocation": {"notin": ["US"]}})
    # An offer whose location has no code matches no geolocation filter at all, not even notin.
    assert ids(rest) == listed(sim, lambda o: o["geolocation"][-4:-2] == ", " and not o["geolocation"].endswith("US"))
    r = api.post("/api/v0/bundles/", json={"geolocation": {"gte": "US"}})
    assert r.status_code == 400 and r.json()["error"] == "invalid_args"


def test_virtual_and_alias_columns(sim: Simulator, api: httpx.Client) -> None:
    assert ids(search(api, {"datacenter": {"eq": True}})) == listed(sim, lambda o: o["hosting_type"] == 1)
    assert ids(search(api, {"verified": {"eq": False}})) == listed(sim, lambda o: o["verification"] != "verified")
    assert ids(search(api, {"reliability2": {"gte": 0.98}})) == listed(sim, lambda o: o["reliability"] >= 0.98)
    assert ids(search(api, {"target_reliability": {"gte": 0.98}})) == listed(sim, lambda o: o["reliability"] >= 0.98)
    assert ids(search(api, {"cpu_ram_GB": {"gte": 500}})) == listed(sim, lambda o: o["cpu_ram"] >= 500_000)
    assert ids(search(api, {"dph": {"lte": 0.3}})) == listed(sim, lambda o: o["dph_total"] <= 0.3)
    new_driver = listed(sim, lambda o: o["driver_vers"] >= 570000000)
    assert ids(search(api, {"driver_version": {"gte": "570.0.0"}})) == new_driver
    month = 30 * 86400
    got = ids(search(api, {"duration": {"gte": month}}))
    assert listed(sim, lambda o: o["duration"] >= month + 10) <= got
    assert got <= listed(sim, lambda o: o["duration"] >= month - 10)
    assert got != listed(sim, lambda o: True)
    assert search(api, {"ask_contract_id": {"eq": cheapest(api)["id"]}})[0]["id"] == cheapest(api)["id"]


def test_unknown_fields_operators_and_types_are_400(api: httpx.Client) -> None:
    for body in ({"gpu_nam": {"eq": "RTX 4090"}}, {"num_gpus": {"ge": 1}}, {"num_gpus": {"eq": "two"}},
                 {"order": [["nope", "asc"]]}, {"order": [["dph_total", "up"]]}, {"type": "spot"}, [1, 2]):
        r = api.post("/api/v0/bundles/", json=body)
        assert r.status_code == 400, body
        assert r.json()["success"] is False and r.json()["error"] == "invalid_args" and r.json()["msg"]


def test_order_limit_type_and_storage_pricing(sim: Simulator, api: httpx.Client) -> None:
    by_price = search(api, {"order": [["dph_total", "asc"]]})
    assert [o["dph_total"] for o in by_price] == sorted(o["dph_total"] for o in by_price)
    default = search(api, {})
    assert [o["score"] for o in default] == sorted((o["score"] for o in default), reverse=True)
    two_keys = search(api, {"order": [["num_gpus", "asc"], ["dph_total", "desc"]]})
    keys = [(o["num_gpus"], -o["dph_total"]) for o in two_keys]
    assert keys == sorted(keys)
    assert len(search(api, {"limit": 5})) == 5
    offer = search(api, {"allocated_storage": 100, "order": [["dph_total", "asc"]], "limit": 1})[0]
    assert offer["disk_space"] >= 100
    assert offer["storage_total_cost"] == pytest.approx(offer["storage_cost"] * 100 / 720, abs=1e-6)
    assert offer["dph_total"] == pytest.approx(offer["dph_base"] + offer["storage_total_cost"], abs=1e-6)
    assert offer["flops_per_dphtotal"] == pytest.approx(offer["total_flops"] / offer["dph_total"], rel=1e-3)
    bid = search(api, {"type": "interruptible", "id": {"eq": offer["id"]}, "allocated_storage": 100})[0]
    assert bid["is_bid"] is True
    assert bid["dph_total"] == pytest.approx(bid["min_bid"] + bid["storage_total_cost"], abs=1e-6)
    assert search(api, {"type": "ondemand", "id": {"eq": offer["id"]}})[0]["is_bid"] is False
    assert ids(search(api, {"allocated_storage": 1000})) == listed(sim, lambda o: o["disk_space"] >= 1000)


def test_default_cap_and_the_older_get_form(sim: Simulator, api: httpx.Client) -> None:
    with Simulator(api_key=KEY, catalogue_seed=11) as capped:
        r = httpx.post(f"{capped.url}/api/v0/bundles/", json={"limit": 500}, headers={"Authorization": f"Bearer {KEY}"})
        assert len(r.json()["offers"]) == 64
    body = {"num_gpus": {"eq": 4}, "order": [["dph_total", "asc"]]}
    r = api.get("/api/v0/bundles", params={"q": json.dumps(body)})
    assert r.status_code == 200 and [o["id"] for o in r.json()["offers"]] == [o["id"] for o in search(api, body)]


# ---------------------------------------------------------------------------- instance lifecycle


def test_create_runs_a_real_process_with_env_and_destroy_kills_its_group(sim: Simulator, api: httpx.Client) -> None:
    offer = cheapest(api, num_gpus={"eq": 1})
    script = "env > env.txt; sleep 300 & echo child $! > child.txt; wait"
    r = create(api, offer["id"], runtype="args", onstart="/bin/sh", args=["-c", script], label="life-1",
               env={"FOO": "bar baz", "APOTHIC_CONTAINER_ID": "c-1", "-p 8000:8000": "1"})
    assert r.status_code == 200 and r.json()["success"] is True
    instance_id = r.json()["new_contract"]
    row = show(api, instance_id)
    assert row["actual_status"] == "loading" and row["intended_status"] == "running" and row["ports"] is None
    assert (row["label"], row["machine_id"], row["gpu_name"]) == ("life-1", offer["machine_id"], offer["gpu_name"])
    assert abs(row["start_date"] - time.time()) < 5
    assert ["-p 8000:8000", "1"] in row["extra_env"] and ["FOO", "bar baz"] in row["extra_env"]
    row = wait_for(lambda: (x := show(api, instance_id)) and x["actual_status"] == "running" and x, what="running")
    assert row["ports"]["8000/tcp"][0]["HostPort"].isdigit()
    inst = sim.state()["instances"][0]
    workdir = Path(inst["workdir"])
    env = dict(line.split("=", 1) for line in wait_for(lambda: (workdir / "env.txt").exists() and
                                                       (workdir / "env.txt").read_text(), what="env").splitlines()
               if "=" in line)
    assert env["FOO"] == "bar baz" and env["APOTHIC_CONTAINER_ID"] == "c-1"
    assert env["VAST_CONTAINERLABEL"] == f"C.{instance_id}" and env["CONTAINER_ID"] == str(instance_id)
    assert env["VAST_TCP_PORT_8000"] == row["ports"]["8000/tcp"][0]["HostPort"]
    assert "-p 8000:8000" not in env
    main_pid = inst["pids"][0]
    child = int(wait_for(lambda: (workdir / "child.txt").exists() and (workdir / "child.txt").read_text().split()[1],
                         what="child pid"))
    assert os.getsid(main_pid) == main_pid  # its own session
    assert _alive(main_pid) and _alive(child)
    assert offer["id"] in sim.state()["rented_offers"]
    assert api.delete(f"/api/v0/instances/{instance_id}/").json() == {"success": True}
    assert not _alive(main_pid) and not _alive(child)
    assert show(api, instance_id) is None
    r = api.delete(f"/api/v0/instances/{instance_id}/")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    state = sim.state()
    assert state["instances"] == [] and state["rented_offers"] == []


def test_an_instance_whose_command_ends_is_exited_with_its_logs(sim: Simulator, api: httpx.Client) -> None:
    instance_id = run_script(api, "echo out-line; echo err-line >&2; sleep 300 & exit 3")
    row = wait_for(lambda: (x := show(api, instance_id)) and x["actual_status"] == "exited" and x, what="exited")
    assert row["status_msg"] == "Exited (3)" and row["intended_status"] == "running"
    assert sim.state()["instances"][0]["exit_code"] == 3
    assert not [p for p in marked_pids(f"{sim.token}:{instance_id}")], "a container's processes end with it"
    r = api.put(f"/api/v0/instances/request_logs/{instance_id}/", json={"tail": "1000"})
    assert r.status_code == 200 and r.json()["success"] is True
    text = httpx.get(r.json()["result_url"]).text  # no auth, as Vast's S3 URL
    assert "out-line" in text and "err-line" in text
    assert api.put("/api/v0/instances/request_logs/1/", json={}).status_code == 404
    assert offer_is_rented(sim, instance_id)
    api.delete(f"/api/v0/instances/{instance_id}/")


def offer_is_rented(sim: Simulator, instance_id: int) -> bool:
    state = sim.state()
    offer = next(i["offer_id"] for i in state["instances"] if i["id"] == instance_id)
    return offer in state["rented_offers"]


def test_ssh_runtype_runs_onstart_beside_a_container_that_stays_up(sim: Simulator, api: httpx.Client) -> None:
    offer = cheapest(api)
    r = create(api, offer["id"], onstart="echo started > started.txt; exit 5", label="ssh-1",
               runtype="ssh_direc ssh_proxy")
    instance_id = r.json()["new_contract"]
    wait_for(lambda: sim.state()["instances"][0]["onstart_exit_code"] == 5, what="onstart done")
    row = show(api, instance_id)
    assert row["actual_status"] == "running" and "22/tcp" in row["ports"]
    assert (Path(sim.state()["instances"][0]["workdir"]) / "started.txt").read_text() == "started\n"
    api.delete(f"/api/v0/instances/{instance_id}/")


def test_create_validation_and_unknown_offer(sim: Simulator, api: httpx.Client) -> None:
    offer = cheapest(api)
    for body in ({"image": None}, {"disk": 4}, {"disk": 1e6}, {"env": ["A=1"]}, {"env": {"A": {"x": 1}}},
                 {"label": "x" * 300}, {"args": "not a list"}, {"onstart": "x" * 5000}, {"price": 500}):
        r = create(api, offer["id"], **body)
        assert r.status_code == 400 and r.json()["error"] == "invalid_args", body
    r = create(api, 123)
    assert r.status_code == 404 and r.json()["error"] == "no_such_ask"
    assert sim.state()["instances"] == []


def test_low_bid_creates_a_stopped_instance_and_says_so(sim: Simulator, api: httpx.Client) -> None:
    offer = cheapest(api)
    r = create(api, offer["id"], price=0.001)
    assert r.status_code == 400 and r.json()["error"] == "invalid_price"
    instance_id = r.json()["new_contract"]
    assert show(api, instance_id)["actual_status"] == "stopped"
    api.delete(f"/api/v0/instances/{instance_id}/")


def test_instance_lists_v1_paging_filters_and_v0(sim: Simulator, api: httpx.Client) -> None:
    offers = search(api, {"num_gpus": {"eq": 1}, "order": [["dph_total", "asc"]], "limit": 3})
    made = [create(api, o["id"], label=f"lbl-{i % 2}", runtype="args", onstart="/bin/sleep", args=["300"]
                   ).json()["new_contract"] for i, o in enumerate(offers)]
    newest_first = json.dumps([{"col": "id", "dir": "desc"}])
    page = api.get("/api/v1/instances/", params={"limit": 2, "order_by": newest_first}).json()
    assert page["success"] and page["total_instances"] == 3 and [i["id"] for i in page["instances"]] == made[::-1][:2]
    assert page["label_counts"] == {"lbl-0": 2, "lbl-1": 1}
    rest = api.get("/api/v1/instances/", params={"limit": 2, "after_token": page["next_token"],
                                                 "order_by": newest_first}).json()
    assert [i["id"] for i in rest["instances"]] == [made[0]] and rest["next_token"] is None
    mine = api.get("/api/v1/instances/", params={"select_filters": json.dumps({"label": {"eq": "lbl-0"}})}).json()
    assert [i["id"] for i in mine["instances"]] == [made[0], made[2]]
    cols = api.get("/api/v1/instances/", params={"select_cols": json.dumps(["label"])}).json()["instances"][0]
    assert set(cols) == {"id", "label"}
    bad = api.get("/api/v1/instances/", params={"select_filters": json.dumps({"dph_total": {"lt": 1}})})
    assert bad.status_code == 400
    assert [i["id"] for i in api.get("/api/v0/instances/").json()["instances"]] == made
    for instance_id in made:
        api.delete(f"/api/v0/instances/{instance_id}/")


def test_stop_start_and_label(sim: Simulator, api: httpx.Client) -> None:
    instance_id = run_script(api, "sleep 300")
    wait_for(lambda: show(api, instance_id)["actual_status"] == "running", what="running")
    pid = sim.state()["instances"][0]["pids"][0]
    assert api.put(f"/api/v0/instances/{instance_id}/", json={"state": "stopped", "label": "renamed"}).json()["success"]
    row = show(api, instance_id)
    assert (row["actual_status"], row["intended_status"], row["cur_state"], row["label"]) == (
        "stopped", "stopped", "stopped", "renamed")
    assert not _alive(pid)
    api.put(f"/api/v0/instances/{instance_id}/", json={"state": "running"})
    wait_for(lambda: show(api, instance_id)["actual_status"] == "running", what="restarted")
    assert len(sim.state()["instances"][0]["pids"]) == 2
    assert api.put("/api/v0/instances/1/", json={"state": "running"}).status_code == 404
    api.delete(f"/api/v0/instances/{instance_id}/")


# ---------------------------------------------------------------------------- faults


def test_offer_taken_between_search_and_create(sim: Simulator, api: httpx.Client) -> None:
    first, second = search(api, {"order": [["dph_total", "asc"]], "limit": 2})
    sim.take_offer(first["id"])
    r = create(api, first["id"])
    assert r.status_code == 404
    assert r.json() == {"success": False, "error": "no_such_ask", "ask_id": first["id"],
                        "msg": f"error 404/3603: no_such_ask Instance type by id {first['id']} is not available."}
    assert first["id"] not in ids(search(api, {}))
    assert first["id"] in sim.state()["taken_offers"]
    sim.take_offer(second["id"], status=410)
    r = create(api, second["id"])
    assert r.status_code == 410 and r.json()["error"] == "no_such_ask" and "no longer available" in r.json()["msg"]
    assert sim.state()["instances"] == []


def test_an_offer_rents_once_and_returns_after_destroy(sim: Simulator, api: httpx.Client) -> None:
    offer = cheapest(api)
    instance_id = create(api, offer["id"]).json()["new_contract"]
    assert offer["id"] not in ids(search(api, {}))
    assert offer["id"] in ids(search(api, {"rented": {"eq": True}}))
    assert create(api, offer["id"]).status_code == 404
    api.delete(f"/api/v0/instances/{instance_id}/")
    assert offer["id"] in ids(search(api, {"rented": {"eq": False}}))


def test_429_bursts_in_every_style_then_normal_service(sim: Simulator, api: httpx.Client) -> None:
    sim.rate_limit(3)
    statuses = [api.post("/api/v0/bundles/", json={"limit": 1}).status_code for _ in range(4)]
    assert statuses == [429, 429, 429, 200]
    sim.rate_limit(1, style="text")
    r = api.get("/api/v0/instances/")
    assert (r.status_code, r.text, r.headers["content-type"]) == (429, "API requests too frequent", "text/plain")
    assert "retry-after" not in r.headers
    sim.rate_limit(1, style="error", method="PUT", path=r"/asks/")
    assert api.post("/api/v0/bundles/", json={"limit": 1}).status_code == 200  # the rule waits for a create
    r = create(api, 1)
    assert r.status_code == 429 and r.json()["error"] == "rate_limit_exceeded"
    # The same through the admin endpoint.
    assert httpx.post(f"{sim.url}/_sim/faults", json={"kind": "rate_limit", "count": 1}).status_code == 200
    r = api.get("/api/v0/instances/")
    assert r.status_code == 429 and r.json() == {"detail": "API requests too frequent endpoint threshold=4.5"}
    assert [x["status"] for x in sim.requests()[-2:]] == [429, 429]


def test_injected_5xx_and_the_admin_fault_api(sim: Simulator, api: httpx.Client) -> None:
    sim.fail_requests(1, 503, method="GET")
    r = api.get("/api/v0/instances/")
    assert r.status_code == 503 and r.headers["content-type"] == "text/html"
    assert api.get("/api/v0/instances/").status_code == 200
    assert httpx.post(f"{sim.url}/_sim/faults", json={"kind": "nope"}).status_code == 400
    assert httpx.post(f"{sim.url}/_sim/faults", json={"kind": "take_offer", "offer_id": 1}).status_code == 400
    httpx.post(f"{sim.url}/_sim/faults", json={"kind": "fail_requests", "count": 5, "status": 500})
    assert httpx.get(f"{sim.url}/_sim/state").json()["faults"]["rules"][0]["remaining"] == 5
    assert httpx.delete(f"{sim.url}/_sim/faults").status_code == 200
    assert api.get("/api/v0/instances/").status_code == 200


def test_an_instance_stuck_in_loading(sim: Simulator, api: httpx.Client) -> None:
    offer = cheapest(api)
    sim.stick_loading(offer_id=offer["id"])
    instance_id = run_script(api, "touch ran.txt; sleep 300", offer=offer)
    time.sleep(sim.loading_s * 4)
    row = show(api, instance_id)
    assert row["actual_status"] == "loading" and sim.state()["instances"][0]["pids"] == []
    assert not (Path(sim.state()["instances"][0]["workdir"]) / "ran.txt").exists()
    api.delete(f"/api/v0/instances/{instance_id}/")
    sim.clear_faults()
    sim.stick_loading(count=1)
    stuck = run_script(api, "sleep 300")
    fine = run_script(api, "sleep 300", offer=search(api, {"order": [["dph_total", "asc"]], "limit": 3})[2])
    wait_for(lambda: show(api, fine)["actual_status"] == "running", what="second instance running")
    assert show(api, stuck)["actual_status"] == "loading"
    for instance_id in (stuck, fine):
        api.delete(f"/api/v0/instances/{instance_id}/")


def test_a_host_that_dies_mid_run(sim: Simulator, api: httpx.Client) -> None:
    offer = cheapest(api)
    instance_id = run_script(api, "sleep 300", offer=offer)
    wait_for(lambda: show(api, instance_id)["actual_status"] == "running", what="running")
    pid = sim.state()["instances"][0]["pids"][0]
    sim.host_dies(instance_id=instance_id)
    row = show(api, instance_id)
    assert row["actual_status"] == "offline" and "offline" in row["status_msg"]
    assert not _alive(pid)
    assert not [o for o in search(api, {"rented": {"in": [True, False]}}) if o["machine_id"] == offer["machine_id"]]
    assert offer["machine_id"] in sim.state()["offline_machines"]
    assert api.delete(f"/api/v0/instances/{instance_id}/").json()["success"]
    # Armed on an offer: the host dies while the instance is still loading.
    other = cheapest(api)
    sim.host_dies(offer_id=other["id"], after_s=sim.loading_s / 3)
    instance_id = run_script(api, "touch ran.txt; sleep 300", offer=other)
    wait_for(lambda: show(api, instance_id)["actual_status"] == "offline", what="offline")
    time.sleep(sim.loading_s)
    assert show(api, instance_id)["actual_status"] == "offline" and sim.state()["instances"][0]["pids"] == []
    api.delete(f"/api/v0/instances/{instance_id}/")


@pytest.mark.parametrize("mode", ["drop", "500", "delay"])
def test_a_lost_create_answer_still_creates_the_instance(sim: Simulator, api: httpx.Client, mode: str) -> None:
    offer = cheapest(api)
    sim.lose_create_response(mode=mode, delay_s=1.0)
    if mode == "drop":
        with pytest.raises(httpx.RemoteProtocolError):
            create(api, offer["id"], label="lost-1")
    elif mode == "500":
        assert create(api, offer["id"], label="lost-1").status_code == 500
    else:
        with pytest.raises(httpx.ReadTimeout):
            api.put(f"/api/v0/asks/{offer['id']}/", json={"image": "x", "label": "lost-1"}, timeout=0.3)
    listing = api.get("/api/v1/instances/", params={"select_filters": json.dumps({"label": {"eq": "lost-1"}})}).json()
    assert len(listing["instances"]) == 1
    assert create(api, cheapest(api)["id"], label="next").status_code == 200  # only one answer was lost
    for row in api.get("/api/v0/instances/").json()["instances"]:
        api.delete(f"/api/v0/instances/{row['id']}/")


def test_a_server_that_ignores_a_filter(sim: Simulator, api: httpx.Client) -> None:
    honest = search(api, {"dph_total": {"lte": 0.2}})
    assert honest and all(o["dph_total"] <= 0.2 for o in honest)
    sim.ignore_filter("dph_total")
    sloppy = search(api, {"dph_total": {"lte": 0.2}, "num_gpus": {"eq": 1}})
    assert any(o["dph_total"] > 0.2 for o in sloppy) and all(o["num_gpus"] == 1 for o in sloppy)
    sim.clear_faults()
    assert all(o["dph_total"] <= 0.2 for o in search(api, {"dph_total": {"lte": 0.2}}))


# ---------------------------------------------------------------------------- volumes


def test_volume_search_create_attach_list_and_delete(sim: Simulator, api: httpx.Client) -> None:
    offer = cheapest(api)
    vol_offers = api.post("/api/v0/volumes/search/", json={"machine_id": {"eq": offer["machine_id"]}}).json()["offers"]
    assert [v["id"] for v in vol_offers] == [offer["avail_vol_ask_id"]]
    assert vol_offers[0]["disk_space"] == offer["avail_vol_size"]
    r = api.put("/api/v0/volumes/", json={"id": vol_offers[0]["id"], "size": 5, "name": "data_1"})
    assert r.status_code == 200 and r.json()["volume_name"] == f"V.{r.json()['volume_id']}"
    volume_id = r.json()["volume_id"]
    bad = api.put("/api/v0/volumes/", json={"id": vol_offers[0]["id"], "size": 5, "name": "bad name!"})
    assert bad.status_code == 400
    r = create(api, offer["id"], runtype="args", onstart="/bin/sh",
               args=["-c", 'echo "$VASTSIM_MOUNTS" > mounts.txt; echo x > data/file.txt; sleep 300'],
               volume_info={"create_new": False, "volume_id": volume_id, "mount_path": "/data"})
    instance_id = r.json()["new_contract"]
    workdir = Path(sim.state()["instances"][0]["workdir"])
    wait_for(lambda: (workdir / "mounts.txt").exists() and (workdir / "data" / "file.txt").exists(), what="volume use")
    assert json.loads((workdir / "mounts.txt").read_text())["/data"].endswith(f"V.{volume_id}")
    vols = api.get("/api/v0/volumes", params={"owner": "me", "type": "all_volume"}).json()["volumes"]
    assert [(v["id"], v["label"], v["status"], v["instances"]) for v in vols] == [
        (volume_id, "data_1", "attached", [instance_id])]
    assert api.get("/api/v0/volumes", params={"type": "network_volume"}).json()["volumes"] == []
    r = api.request("DELETE", "/api/v0/volumes/", params={"id": volume_id})
    assert r.status_code == 400  # in use
    api.delete(f"/api/v0/instances/{instance_id}/")
    assert api.request("DELETE", "/api/v0/volumes/", json={"id": volume_id}).json() == {"success": True}
    r = api.request("DELETE", "/api/v0/volumes/", params={"id": volume_id})
    assert r.status_code == 404 and r.json()["error"] == "no_such_volume"


def test_a_volume_belongs_to_its_machine(sim: Simulator, api: httpx.Client) -> None:
    first, *others = search(api, {"order": [["dph_total", "asc"]], "limit": 5})
    second = next(o for o in others if o["machine_id"] != first["machine_id"])
    r = create(api, first["id"], volume_info={"create_new": True, "volume_id": second["avail_vol_ask_id"],
                                              "size": 5, "mount_path": "/data"})
    assert r.status_code == 400 and "machine" in r.json()["msg"]
    r = create(api, first["id"], volume_info={"create_new": True, "volume_id": first["avail_vol_ask_id"],
                                              "size": 5, "mount_path": "/data", "name": "made_at_create"})
    assert r.status_code == 200
    vols = api.get("/api/v0/volumes").json()["volumes"]
    assert [(v["label"], v["machine_id"]) for v in vols] == [("made_at_create", first["machine_id"])]
    api.delete(f"/api/v0/instances/{r.json()['new_contract']}/")
    r = create(api, second["id"], volume_info={"create_new": False, "volume_id": vols[0]["id"], "mount_path": "/d"})
    assert r.status_code == 400 and sim.state()["instances"] == []


# ---------------------------------------------------------------------------- entry points and modes


def test_python_dash_m_serves_until_sigterm(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "apothic.vastsim", "--port", str(port), "--catalogue-seed", "3",
                             "--instance-mode", "process", "--api-key", KEY, "--loading-s", "0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line
        r = httpx.post(f"http://127.0.0.1:{port}/api/v0/bundles/", json={"limit": 500},
                       headers={"Authorization": f"Bearer {KEY}"})
        _, asks = build_catalogue(3)
        assert r.status_code == 200 and {o["id"] for o in r.json()["offers"]} <= {a.id for a in asks}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_only_loopback_and_known_modes() -> None:
    with pytest.raises(ValueError):
        Simulator(host="0.0.0.0")
    with pytest.raises(ValueError):
        Simulator(instance_mode="vm")


DOCKER = docker_available()


def test_docker_mode_refuses_to_start_without_an_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real docker CLI, pointed at an engine that is not there.
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert not docker_available()
    refused = Simulator(instance_mode="docker")
    with pytest.raises(RuntimeError, match="docker"):
        refused.start()
    assert not refused.data_dir.exists()


def _local_image() -> str | None:
    out = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True)
    for name in out.stdout.split():
        probe = subprocess.run(["docker", "run", "--rm", "--pull", "never", "--entrypoint", "/bin/sh", name,
                                "-c", "true"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return name
    return None


def test_docker_mode_runs_the_image_and_destroy_removes_the_container() -> None:
    assert DOCKER, "no Docker engine reachable (`docker info` failed): run scripts/docker-services"
    image = _local_image()
    assert image, "docker mode needs one local image with /bin/sh"
    with Simulator(api_key=KEY, instance_mode="docker", loading_s=0.1) as dsim, \
            httpx.Client(base_url=dsim.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as api:
        offer = cheapest(api)
        r = create(api, offer["id"], image=image, runtype="args", onstart="/bin/sh",
                   args=["-c", "echo in-container $FOO; sleep 300"], env={"FOO": "bar"})
        instance_id = r.json()["new_contract"]
        wait_for(lambda: "in-container bar" in dsim.instance_log(instance_id), timeout=60, what="container output")
        assert show(api, instance_id)["actual_status"] == "running"
        api.delete(f"/api/v0/instances/{instance_id}/")
        names = subprocess.run(["docker", "ps", "-a", "--filter", f"label=vastsim={dsim.token}:{instance_id}",
                                "--format", "{{.Names}}"], capture_output=True, text=True).stdout
        assert names.strip() == ""
        instance_id = create(api, cheapest(api)["id"], image=image, runtype="args", onstart="/bin/sh",
                             args=["-c", "exit 4"]).json()["new_contract"]
        row = wait_for(lambda: (x := show(api, instance_id)) and x["actual_status"] == "exited" and x, timeout=60,
                       what="exited")
        assert row["status_msg"] == "Exited (4)"
        api.delete(f"/api/v0/instances/{instance_id}/")
