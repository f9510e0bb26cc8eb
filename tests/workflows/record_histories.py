"""Record the histories that tests/workflows/test_replay.py replays.

    .venv/bin/python tests/workflows/record_histories.py

Runs a short scenario (deploy, a call, a failing call with a retry, a cancelled call, a map)
against a fresh dev server and writes one JSON history per workflow type into
tests/workflows/histories/, plus ``InvocationWorkflow-events.json``: a generator job that logs,
retries once and is watched (runtime signals, stream polls), and ``MapWorkflow-salvage.json``: a
map whose container is killed mid-batch (the lost batch's heartbeat results are kept).
``--events-only`` and ``--salvage-only`` record just that one (and leave the other files alone). Re-record only when a change to workflow code is meant to break
running workflows (and then version the change with workflow.patched instead, if it matters).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from _common import dev_server, process  # noqa: E402

OUT = Path(__file__).resolve().parent / "histories"


def record_events_history(address: str) -> str:
    """A generator job with logs, a retry and a watcher; its history goes to
    InvocationWorkflow-events.json. Returns its job id."""
    import apothic
    from apothic._control._loop import run_blocking
    from temporalio.client import Client

    app = apothic.App("replay-events")
    marker = OUT / ".failed-once"
    marker.unlink(missing_ok=True)

    @app.function(retries=apothic.Retries(max_retries=1, initial_delay=0.2))
    def items(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            print(f"item {i}", flush=True)
            yield i
            time.sleep(0.3)
        if not marker.exists():
            marker.write_text("x")
            raise ConnectionError("once")

    app.deploy()
    job = items.spawn(3)
    list(job.watch(snapshot=True))
    marker.unlink(missing_ok=True)

    async def dump() -> None:
        client = await Client.connect(address)
        history = await client.get_workflow_handle(job.job_id).fetch_history()
        (OUT / "InvocationWorkflow-events.json").write_text(history.to_json())

    OUT.mkdir(exist_ok=True)
    run_blocking(dump())
    return job.job_id


def record_salvage_history(address: str) -> str:
    """A map on one container, killed (all its processes) mid-batch: the map keeps the results
    the batch's heartbeats carried and reruns the rest. Its history goes to
    MapWorkflow-salvage.json. Returns the map's workflow id."""
    import shutil
    import tempfile
    import threading

    import apothic
    from apothic._control._loop import run_blocking
    from temporalio.client import Client

    app = apothic.App("replay-salvage")
    ran = Path(tempfile.mkdtemp(prefix="apothic-salvage-")) / "ran"

    @app.function(max_containers=1, timeout_s=60)
    def slow(x: int) -> int:
        with open(ran, "a") as f:
            f.write(os.environ["APOTHIC_CONTAINER_ID"] + "\n")
        time.sleep(0.4)
        return x

    app.deploy()
    out: list[list[int]] = []
    mapping = threading.Thread(target=lambda: out.append(slow.map(range(12))))
    mapping.start()
    while not ran.exists() or len(ran.read_text().split()) < 9:  # into the second batch
        time.sleep(0.1)
    marker = f"APOTHIC_CONTAINER_ID={ran.read_text().split()[0]}".encode()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), 9)
        except OSError:
            continue
    mapping.join()
    shutil.rmtree(ran.parent, ignore_errors=True)
    assert out == [list(range(12))], out

    async def dump() -> str:
        client = await Client.connect(address)
        found = [wf async for wf in client.list_workflows("WorkflowType='MapWorkflow' AND ApothicApp='replay-salvage'")]
        history = await client.get_workflow_handle(found[0].id, run_id=found[0].run_id).fetch_history()
        (OUT / "MapWorkflow-salvage.json").write_text(history.to_json())
        return found[0].id

    OUT.mkdir(exist_ok=True)
    return run_blocking(dump())


def main() -> None:
    os.environ.setdefault("APOTHIC_CONTAINER_IDLE_S", "3")
    with dev_server() as address, process("-m", "apothic.worker"):
        import apothic
        from apothic._control._loop import run_blocking
        from temporalio.client import Client

        if "--events-only" in sys.argv:
            record_events_history(address)
            return
        if "--salvage-only" in sys.argv:
            record_salvage_history(address)
            return
        app = apothic.App("replay")

        @app.function(retries=apothic.Retries(max_retries=1, initial_delay=0.2))
        def work(x: int) -> int:
            if x < 0:
                raise ValueError("negative")
            time.sleep(0.5 if x == 1 else 0)
            return x

        @app.function()
        def nap() -> None:
            time.sleep(60)

        app.deploy()
        work.remote(1)
        try:
            work.remote(-1)
        except ValueError:
            pass
        job = nap.spawn()
        while job.status() is not apothic.JobStatus.RUNNING:
            time.sleep(0.2)
        job.cancel()
        work.map(range(40))
        time.sleep(8)  # let containers drain, fleets end

        async def dump() -> None:
            client = await Client.connect(address)
            seen: dict[str, int] = {}
            async for wf in client.list_workflows():
                n = seen.get(wf.workflow_type, 0)
                if n >= 3:
                    continue
                seen[wf.workflow_type] = n + 1
                history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
                (OUT / f"{wf.workflow_type}-{n}.json").write_text(history.to_json())

        OUT.mkdir(exist_ok=True)
        for old in OUT.glob("*.json"):
            old.unlink()
        run_blocking(dump())
        record_events_history(address)
        record_salvage_history(address)
        print(sorted(p.name for p in OUT.glob("*.json")))


if __name__ == "__main__":
    main()
