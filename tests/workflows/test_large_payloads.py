"""Arguments and results of 50 MB travel through the blob store; histories hold references only.

Against the real dev server, control worker and containers: the default folder store, and S3
(SeaweedFS, with its own control worker on its own control queue configured for it).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from temporalio.client import Client

from apothic import App

from ..conftest import ROOT, S3Server, start_worker, stop, wait_until

MB = 1_000_000
# Temporal's limits: 2 MiB per payload, 50 MB (error) / 10 MB (warning) per history.
HISTORY_LIMIT_BYTES = 50 * MB
PAYLOAD_LIMIT_BYTES = 2 * 1024 * 1024


def histories(address: str, app: str, workflow_type: str) -> list[tuple[int, int]]:
    """(total bytes, largest event bytes) of the histories of ``app``'s workflows of that type."""

    async def fetch() -> list[tuple[int, int]]:
        client = await Client.connect(address)
        out = []
        async for wf in client.list_workflows(f"WorkflowType='{workflow_type}' AND ApothicApp='{app}'"):
            history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
            sizes = [event.ByteSize() for event in history.events]
            out.append((sum(sizes), max(sizes)))
        return out

    return asyncio.run(fetch())


def assert_small_histories(
    address: str, app: str, workflow_type: str, count: int = 1, total_below: int = 100_000, event_below: int = 20_000
) -> int:
    found: list[tuple[int, int]] = []

    def listed() -> bool:
        found[:] = histories(address, app, workflow_type)
        return len(found) >= count

    wait_until(listed, timeout=30, what=f"{workflow_type} of {app} to be listed")
    for total, largest in found:
        # Far below the limits: references travel, not the megabytes.
        assert total < total_below < HISTORY_LIMIT_BYTES, found
        assert largest < event_below < PAYLOAD_LIMIT_BYTES, found
    return max(total for total, _ in found)


def deploy_flip(app_name: str) -> object:
    app = App(app_name)

    @app.function()
    def flip(data: bytes) -> bytes:
        return data[::-1]

    app.deploy()
    return flip


def blob_files(state_dir: Path) -> set[Path]:
    root = state_dir / "blobs"
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.mark.slow
@pytest.mark.usefixtures("control_worker")
def test_fifty_megabytes_each_way_through_the_default_folder(temporal: str, state_dir: Path, app_name: str) -> None:
    flip = deploy_flip(app_name)
    assert flip.remote(b"warm") == b"mraw"  # the container is up: time the transfer, not the start
    data = os.urandom(50 * MB)
    before = blob_files(state_dir)
    started = time.monotonic()
    assert flip.remote(data) == data[::-1]
    elapsed = time.monotonic() - started
    new = blob_files(state_dir) - before
    assert len(new) == 2 and all(p.stat().st_size > 50 * MB for p in new)  # the argument and the result
    history = assert_small_histories(temporal, app_name, "InvocationWorkflow", count=2)
    print(f"\n50 MB each way, folder store: {elapsed:.2f} s; largest job history {history} bytes")
    # The same argument again (a retry or a repeat) is not stored twice.
    assert flip.remote(data) == data[::-1]
    assert len(blob_files(state_dir) - before) == 2


@pytest.fixture(scope="module")
def s3_worker(temporal: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A control worker of its own (queue ``apothic-control-s3``) whose blob store is S3.

    Yields the environment a client needs to use the same settings.
    """
    folder = tmp_path_factory.mktemp("s3-worker")
    config = yaml.safe_load((ROOT / "temporal-dev.yaml").read_text())
    config["worker"]["control_task_queue"] = "apothic-control-s3"
    config["blobs"] = {
        "store": f"s3://{s3_server.bucket}/large",
        "s3_endpoint_url": s3_server.endpoint_url,
        "threshold_bytes": 256 * 1024,
    }
    (folder / "temporal-dev.yaml").write_text(yaml.safe_dump(config))
    env = {"APOTHIC_CONFIG": str(folder / "temporal-dev.yaml"), **s3_server.env()}
    proc: subprocess.Popen = start_worker({**os.environ, **env}, folder / "worker.log")
    try:
        yield env
    finally:
        stop(proc)


@pytest.mark.slow
def test_fifty_megabytes_each_way_through_s3(
    temporal: str, s3_server: S3Server, s3_worker: dict[str, str], state_dir: Path, app_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in s3_worker.items():
        monkeypatch.setenv(key, value)
    flip = deploy_flip(app_name)
    assert flip.remote(b"warm") == b"mraw"
    data = os.urandom(50 * MB)
    before = blob_files(state_dir)
    started = time.monotonic()
    assert flip.remote(data) == data[::-1]
    elapsed = time.monotonic() - started
    listed = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix="large/")
    assert sum(o["Size"] > 50 * MB for o in listed["Contents"]) >= 2  # the argument and the result
    assert blob_files(state_dir) == before  # nothing went to the folder store
    history = assert_small_histories(temporal, app_name, "InvocationWorkflow", count=2)
    print(f"\n50 MB each way, S3 (SeaweedFS) store: {elapsed:.2f} s; largest job history {history} bytes")


@pytest.mark.usefixtures("control_worker")
def test_a_map_with_multi_megabyte_inputs_and_results(temporal: str, app_name: str) -> None:
    app = App(app_name)

    @app.function(max_containers=2)
    def halve(data: bytes) -> bytes:
        return data[: len(data) // 2]

    @app.function()
    def noise(seed: int) -> bytes:  # results under the threshold, too many to return inline at once
        import random

        return random.Random(seed).randbytes(200_000)

    app.deploy()
    inputs = [os.urandom(4 * MB) for _ in range(5)]
    assert halve.map(inputs) == [x[: 2 * MB] for x in inputs]
    assert_small_histories(temporal, app_name, "MapWorkflow", count=1)
    # 24 results of 200 KB (under the threshold): a batch returns 1 MB of them inline at most, the
    # rest as references, so that no batch output exceeds Temporal's 2 MiB payload limit.
    import random

    assert noise.map(range(24)) == [random.Random(i).randbytes(200_000) for i in range(24)]
    assert_small_histories(temporal, app_name, "MapWorkflow", count=2, total_below=10 * MB, event_below=1_500_000)
