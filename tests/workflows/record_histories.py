"""Record the histories that tests/workflows/test_replay.py replays.

    .venv/bin/python tests/workflows/record_histories.py

Runs a short scenario (deploy, a call, a failing call with a retry, a cancelled call, a map)
against a fresh dev server and writes one JSON history per workflow type into
tests/workflows/histories/. Re-record only when a change to workflow code is meant to break
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


def main() -> None:
    os.environ.setdefault("APOTHIC_CONTAINER_IDLE_S", "3")
    with dev_server() as address, process("-m", "apothic.worker"):
        import apothic
        from apothic._loop import run_blocking
        from temporalio.client import Client

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
        print(sorted(p.name for p in OUT.glob("*.json")))


if __name__ == "__main__":
    main()
