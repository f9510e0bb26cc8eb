"""Secrets reach containers on every provider and nothing else: no history, memo, search
attribute, event, log line or file holds a value, and the worker's own credentials stay out.

One dev server and control worker of their own (so that every workflow of the namespace and
every file under ``APOTHIC_HOME`` are this module's), the worker holding credentials of its
own (AWS keys, a Vast key, a Temporal API key) and a Temporal API key made for containers;
the payload key too reaches containers in their environment, and is written down nowhere.
Functions run as a process, in a Docker container (an image with a shell step) and on a
rented machine of the Vast.ai simulator (a GPU this host lacks); each returns digests of what
it got, never the values. Needs the Docker engine and the local registry (as CI starts them).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import apothic
from apothic import App, ControlPlaneClient, Image, PlacementError
from apothic._control._config import load_settings
from apothic._data._signing import payload_key

from ..conftest import free_port, read_if_there, start_dev_server, start_worker, stop, wait_until

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
T = TypeVar("T")


def value(tag: str) -> str:
    """A random value that JSON escapes (quote, backslash, non-ASCII) and base64 hides."""
    return f'{tag}-{secrets.token_hex(16)}-"q\\ü€'


def forms(text: str) -> list[bytes]:
    """What finds ``text`` however it was written down: its random core (which every escaping
    keeps: JSON, repr, ascii), and it and its escaped forms in base64 at any alignment (the
    middle of the encoding, which only their own bytes determine)."""
    texts = {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1], repr(text)[1:-1],
             ascii(text)[1:-1]}
    out = {core.encode() for core in re.findall(r"[0-9A-Fa-f]{16,}", text)}
    assert out, f"{text!r} has no random core"
    for t in texts:
        for shift in range(3):
            out.add(base64.b64encode(b"\0" * shift + t.encode() + b"\0\0")[4:-8])
    return sorted(out)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class World:
    """The module's dev server, control worker, secret store and the values to look for."""

    def __init__(self, tmp: Path, vast_sim) -> None:
        self.tmp, self.vast_sim = tmp, vast_sim
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.store_path = tmp / "store" / "secrets.json"
        self.token, self.shared_first, self.shared_last = value("token"), value("shared1"), value("shared2")
        self.worker_creds = {
            "AWS_ACCESS_KEY_ID": f"AKIA{secrets.token_hex(8).upper()}", "AWS_SECRET_ACCESS_KEY": value("aws"),
            "AWS_SESSION_TOKEN": value("awssession"), "APOTHIC_TEMPORAL_API_KEY": f"worker-{secrets.token_hex(16)}",
        }
        self.container_key = f"container-{secrets.token_hex(16)}"
        # The key payloads are signed with: the session's, which the worker reads from its file
        # (APOTHIC_PAYLOAD_KEY_FILE) and gives each container in its environment.
        self.payload_key = payload_key(load_settings()).secret.hex()
        self.env = dict(
            os.environ, APOTHIC_TEMPORAL_ADDRESS=self.address, APOTHIC_HOME=str(tmp),
            APOTHIC_SECRETS_FILE=str(self.store_path), VAST_URL=vast_sim.url, VAST_API_KEY=vast_sim.api_key,
            APOTHIC_VAST_REGISTRY="127.0.0.1:5000", APOTHIC_CONTAINER_TEMPORAL_API_KEY=self.container_key,
            APOTHIC_TEMPORAL_TLS="0", **self.worker_creds,
        )
        self.server = start_dev_server(tmp / "temporal.db", self.port)
        self.worker = start_worker(self.env, tmp / "logs" / "worker-of-test.log")
        self.client = ControlPlaneClient(self.address)

    def secret_values(self) -> dict[str, str]:
        """Everything that must never be written down: the secrets and the worker's credentials
        (and the key made for containers and the payload key, which only environments may hold)."""
        return {"TOKEN": self.token, "SHARED (first)": self.shared_first, "SHARED (last)": self.shared_last,
                "container key": self.container_key, "payload key": self.payload_key, **self.worker_creds}

    def close(self) -> None:
        stop(self.worker)
        stop(self.server)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, vast_sim, temporal: str) -> Iterator[World]:
    # (``temporal``: the session's settings, its payload key among them, which this module's
    # worker and this process, its client, share.)
    (tmp := tmp_path_factory.mktemp("secrets-home")).joinpath("logs").mkdir()
    w = World(tmp, vast_sim)
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def sdk_store(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """``apothic.Secret.objects`` of this process writes the store the module's worker reads."""
    monkeypatch.setenv("APOTHIC_SECRETS_FILE", str(world.store_path))


def on_server(world: World, fn: Callable[[Any], Awaitable[T]]) -> T:
    """``await fn(client)`` with a Temporal client of the module's server."""
    from apothic._control._client import get_client
    from apothic._control._loop import run_blocking

    async def main() -> T:
        return await fn(await get_client(world.client.settings))

    return run_blocking(main())


def env_report() -> dict:
    """What a container got: digests of the variables that matter, the names of all."""
    import hashlib
    import os

    def sha(key: str) -> str | None:
        got = os.environb.get(key.encode())
        return None if got is None else hashlib.sha256(got).hexdigest()

    return {
        "digests": {k: sha(k) for k in ("TOKEN", "SHARED", "APOTHIC_TEMPORAL_API_KEY", "APOTHIC_PAYLOAD_KEY")},
        "names": sorted(k.decode() for k in os.environb),
        "built_image": os.path.exists("/etc/apothic-secrets-test"),  # on_docker's image step made it
        "marker": os.environ.get("VASTSIM_MARKER", ""),
    }


def test_a_missing_secret_fails_the_job_at_once_with_the_fix(world: World, app_name: str, sdk_store: None) -> None:
    missing = f"absent-{secrets.token_hex(4)}"
    apothic.Secret.objects.create("present-one", {"TOKEN": world.token}, allow_existing=True)
    app = App(app_name, client=world.client)

    @app.function(secrets=[apothic.Secret.from_name("present-one"), apothic.Secret.from_name(missing)], timeout_s=60)
    def needs_it() -> dict:
        return env_report()

    app.deploy()
    job = needs_it.spawn()
    started = time.monotonic()
    with pytest.raises(PlacementError) as info:
        job.wait(timeout_s=60)
    took = time.monotonic() - started
    assert took < 10, f"a missing secret took {took:.1f} s to fail the job"
    text = str(info.value)
    assert text.startswith(f"job {job.job_id}: cannot start a container of {app_name}.needs_it v1: secret "
                           f"{missing!r} is not in the secret store {world.store_path}. "), text
    assert f"Fix: create it where the control worker reads it: `apothic secret create {missing} KEY=VALUE`" in text
    placement = [e.data for e in job.watch(snapshot=True) if e.event == "placement"]
    assert any(missing in str(d.get("reason", "")) for d in placement), placement

    # One container was tried, once, and its start failed for good (no retry loop, no second container).
    fleet_id = f"apothic-fleet:{app_name}:needs_it:v1"

    async def fleet_done(client) -> bool:  # noqa: ANN001
        return (await client.get_workflow_handle(fleet_id).describe()).status.name != "RUNNING"

    wait_until(lambda: on_server(world, fleet_done), timeout=30, what="the fleet to end")

    async def container_runs(client) -> list[tuple[str, list]]:  # noqa: ANN001
        out = []
        async for wf in client.list_workflows("WorkflowType = 'ContainerWorkflow'"):
            if wf.id.startswith(f"apothic-container:{app_name}:needs_it:v1:"):
                history = await client.get_workflow_handle(wf.id).fetch_history()
                failed = [e.activity_task_failed_event_attributes.failure.application_failure_info
                          for e in history.events if e.HasField("activity_task_failed_event_attributes")]
                out.append((wf.id, [(f.type, f.non_retryable) for f in failed]))
        return out

    runs = on_server(world, container_runs)
    assert len(runs) == 1 and runs[0][1] == [("SecretNotFound", True)], runs

    async def execute_events(client) -> list[str]:  # noqa: ANN001
        history = await client.get_workflow_handle(job.job_id).fetch_history()
        return [str(e.WhichOneof("attributes")) for e in history.events]

    assert "activity_task_started_event_attributes" not in on_server(world, execute_events)  # the function never ran


def test_secrets_reach_every_provider_and_nothing_else(world: World, app_name: str, sdk_store: None) -> None:
    first, last = f"{app_name[:40]}-a", f"{app_name[:40]}-b"
    apothic.Secret.objects.create(first, {"TOKEN": world.token, "SHARED": world.shared_first})
    apothic.Secret.objects.create(last, {"SHARED": world.shared_last})
    canary = value("canary")
    apothic.Secret.objects.create(f"{app_name[:40]}-c", {"CANARY": canary})
    uses = [apothic.Secret.from_name(first), apothic.Secret.from_name(last)]  # the later one's SHARED wins
    app = App(app_name, client=world.client)

    @app.function(secrets=[*uses, apothic.Secret.from_name(f"{app_name[:40]}-c")], timeout_s=300)
    def on_process() -> dict:
        print("the user's own output:", os.environ["CANARY"])  # outside Apothic's control: it is found below
        return env_report()

    @app.function(secrets=uses, timeout_s=300,
                  image=Image.debian_slim(python_version=PY).run_commands("echo secrets > /etc/apothic-secrets-test"))
    def on_docker() -> dict:
        return env_report()

    @app.function(secrets=uses, timeout_s=300, gpu="RTX_3060", max_cost_per_hour_usd=1.5)
    def on_vast() -> dict:
        return env_report()

    app.deploy()
    jobs = {fn.function_name: fn.spawn() for fn in (on_process, on_docker, on_vast)}
    got = {name: job.wait(timeout_s=900) for name, job in jobs.items()}

    # Where each ran: a process of this host (its status file), the built image, a rented machine.
    assert "APOTHIC_STATUS_FILE" in got["on_process"]["names"] and not got["on_process"]["built_image"]
    assert got["on_docker"]["built_image"] and got["on_docker"]["marker"] == ""
    assert "APOTHIC_STATUS_FILE" not in got["on_docker"]["names"]
    assert got["on_vast"]["marker"].startswith(f"{world.vast_sim.token}:")  # a simulated rented machine
    for name, report in got.items():
        assert report["digests"] == {"TOKEN": digest(world.token), "SHARED": digest(world.shared_last),
                                     "APOTHIC_TEMPORAL_API_KEY": digest(world.container_key),
                                     "APOTHIC_PAYLOAD_KEY": digest(world.payload_key)}, name
        leaked = [n for n in report["names"] if n.startswith("AWS_") or n in (
            "VAST_API_KEY", "APOTHIC_CONTAINER_TEMPORAL_API_KEY", "APOTHIC_SECRETS_FILE", "VAST_URL",
            "APOTHIC_PAYLOAD_KEY_FILE")]
        assert leaked == [], (name, leaked)

    # Let the containers drain and be released, so that every history is complete.
    async def running_containers(client) -> int:  # noqa: ANN001
        return len([wf async for wf in client.list_workflows(
            "WorkflowType = 'ContainerWorkflow' AND ExecutionStatus = 'Running'")])

    wait_until(lambda: on_server(world, running_containers) == 0, timeout=180, interval=1, what="every container released")

    # Every workflow of the namespace: its whole history, description (memo, search attributes,
    # pending activities and their heartbeats), and every file under APOTHIC_HOME and the simulator's.
    async def everything(client) -> list[tuple[str, bytes]]:  # noqa: ANN001
        out = []
        async for wf in client.list_workflows():
            handle = client.get_workflow_handle(wf.id, run_id=wf.run_id)
            history = await handle.fetch_history()
            out.append((f"history of {wf.id}", b"".join(e.SerializeToString() for e in history.events)
                        + history.to_json().encode()))
            desc = await handle.describe()
            out.append((f"description of {wf.id}", desc.raw_description.SerializeToString()
                        + json.dumps({"memo": await desc.memo(), "sa": {k.name: str(v) for k, v in
                                                                        desc.typed_search_attributes}}).encode()))
        return out

    records = on_server(world, everything)
    for prefix in ("apothic-app:", "apothic-fleet:", "apothic-container:", "job-"):  # each kind was read
        assert any(what.startswith(f"history of {prefix}") for what, _ in records), prefix
    store = {world.store_path, world.store_path.with_name(world.store_path.name + ".lock")}
    files = [p for root in (world.tmp, Path(world.vast_sim.data_dir)) for p in root.rglob("*")
             if p.is_file() and not p.is_symlink() and p not in store]
    assert any(p.name == "worker-of-test.log" for p in files) and any("containers" in p.parts for p in files)
    for path in files:
        records.append((str(path), read_if_there(path)))
    def where(secret: str) -> list[str]:
        needles = forms(secret)
        return [label for label, data in records if any(n in data for n in needles)]

    found = {label: where(secret) for label, secret in world.secret_values().items()}
    assert found == {label: [] for label in found}, f"secret values found: {found}"
    # The check sees a value where there is one: the user's print of the canary is in its job's
    # history (log events, the result's logs), and the store holds every secret.
    printed = where(canary)
    assert f"history of {jobs['on_process'].job_id}" in printed, printed
    assert all(any(n in world.store_path.read_bytes() for n in forms(v)) for v in (world.token, world.shared_last))


def test_the_scan_finds_encoded_values() -> None:
    secret = value("probe")
    payload = base64.b64encode(json.dumps({"env": {"K": secret}}).encode())
    for shift in range(3):
        blob = b"x" * shift + base64.b64encode(b"y" * shift + secret.encode() + b"tail")
        assert any(n in blob for n in forms(secret)), shift
    assert any(n in payload for n in forms(secret))
    assert any(n in repr({"env": secret}).encode() for n in forms(secret))  # a logged dict
    assert any(n in base64.b64encode(repr(secret).encode()) for n in forms(secret))
    assert not any(n in payload for n in forms(value("other")))
