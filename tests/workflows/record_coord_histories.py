"""Record the DictWorkflow and QueueWorkflow histories that test_coord.py replays.

    .venv/bin/python tests/workflows/record_coord_histories.py

Runs every kind of request against a fresh dev server and writes one JSON history per
workflow into tests/workflows/histories/coord/. Re-record only when a change to these
workflows is meant to break running ones (and version it with workflow.patched instead, if
it matters).
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from _common import dev_server, process

OUT = Path(__file__).resolve().parent / "histories" / "coord"


def main() -> None:
    with dev_server(), process("-m", "apothic.worker"):
        import apothic
        from apothic._control._client import get_client
        from apothic._control._loop import run_blocking

        d = apothic.Dict.from_name("replay-dict", create_if_missing=True)
        d["a"] = 1
        d.update({"b": 2, ("t", 3): "x" * 5000})
        d.put("a", 9, skip_if_exists=True)  # refused: no history
        d.put("c", 3, skip_if_exists=True)
        assert d["a"] == 1 and len(d) == 4 and list(d.keys())[0] == "a"
        d.pop("b")
        d.pop("nothing", None)  # refused: no history
        d.clear()
        d["after"] = True

        q = apothic.Queue.from_name("replay-queue", create_if_missing=True)
        q.put_many([1, 2, 3])
        q.put("short-lived", partition="ttl", partition_ttl=1)
        assert q.get() == 1 and q.get_many(5) == [2, 3]
        try:
            q.get(timeout=0.5)  # waits in the workflow, then its timer fires
        except queue.Empty:
            pass
        threading.Timer(1.0, lambda: q.put("wake")).start()
        assert q.get(timeout=30) == "wake"  # a waiting get woken by a put

        async def cancelled() -> None:
            task = asyncio.ensure_future(q.aio.get(timeout=60))
            await asyncio.sleep(1.0)
            task.cancel()  # the cancel_get signal releases the waiter
            await asyncio.gather(task, return_exceptions=True)
            await asyncio.sleep(1.0)

        asyncio.run(cancelled())
        time.sleep(1.5)  # the "ttl" partition expires
        assert q.len(partition="ttl") == 0
        q.put("x", partition="p")
        q.clear(all=True)

        async def dump() -> None:
            client = await get_client()
            OUT.mkdir(parents=True, exist_ok=True)
            for old in OUT.glob("*.json"):
                old.unlink()
            for wf_id, name in ((d.workflow_id, "DictWorkflow-0"), (q.workflow_id, "QueueWorkflow-0")):
                history = await client.get_workflow_handle(wf_id).fetch_history()
                (OUT / f"{name}.json").write_text(history.to_json())

        apothic.Dict.delete("replay-dict")
        apothic.Queue.delete("replay-queue")
        run_blocking(dump())
        print(sorted(p.name for p in OUT.glob("*.json")))


if __name__ == "__main__":
    main()
