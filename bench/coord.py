"""What apothic.Dict and apothic.Queue cost per operation, against a bare Temporal baseline.

Both run on the same dev server (temporal-dev.yaml's settings, a fresh database) in the same
run: Apothic's control worker, and a bare entity workflow (one update to write, one query to
read; bench/_bare_entity.py) in a worker tuned the same way. Latency: one call at a time,
after a warm-up. Throughput: ``--concurrency`` calls at once from one client (``.aio``).

    python bench/coord.py [--calls 300] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import dev_server, machine, process, summary, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    n, c = args.calls, args.concurrency

    with dev_server() as address, process("-m", "apothic.worker"), process("bench/_bare_entity.py"):
        from _bare_entity import TASK_QUEUE, BareEntity
        from temporalio.client import Client

        import apothic
        from apothic._control._loop import run_blocking

        rows: list[tuple[str, list[float], float]] = []

        def measure(label: str, fn, aio=None, calls: int = n) -> None:
            for _ in range(args.warmup):
                fn()
            lat = timed(fn, calls)
            rate = 0.0
            if aio is not None:
                async def bounded() -> float:  # at most c at once
                    sem = asyncio.Semaphore(c)
                    t = time.perf_counter()

                    async def one(j: int) -> None:
                        async with sem:
                            await aio(j)

                    await asyncio.gather(*(one(j) for j in range(calls)))
                    return calls / (time.perf_counter() - t)

                rate = run_blocking(bounded())
            rows.append((label, lat, rate))

        # The baseline: the same kind of client, driven from the same background loop.
        bare = run_blocking(Client.connect(address))
        handle = run_blocking(bare.start_workflow(BareEntity.run, {}, id=f"bare-{uuid.uuid4()}", task_queue=TASK_QUEUE))
        measure("bare update (write)", lambda: run_blocking(handle.execute_update(BareEntity.set, ["k", "v"])),
                lambda j: handle.execute_update(BareEntity.set, [f"k{j}", "v"]))
        measure("bare query (read)", lambda: run_blocking(handle.query(BareEntity.get, "k")),
                lambda j: handle.query(BareEntity.get, "k"))

        d = apothic.Dict.from_name(f"bench-{uuid.uuid4().hex[:6]}", create_if_missing=True)
        measure("Dict.put (small)", lambda: d.put("k", 1), lambda j: d.aio.put(f"k{j}", j))
        measure("Dict.get (small)", lambda: d.get("k"), lambda j: d.aio.get("k"))
        measure("k in d (contains)", lambda: "k" in d, lambda j: d.aio.contains("k"))
        mb = b"x" * 1_000_000
        measure("Dict.put (1 MB, blob store)", lambda: d.put("big", mb), None, calls=max(n // 10, 10))
        measure("Dict.get (1 MB, blob store)", lambda: d.get("big"), None, calls=max(n // 10, 10))

        q = apothic.Queue.from_name(f"bench-{uuid.uuid4().hex[:6]}", create_if_missing=True)
        measure("Queue.put", lambda: q.put(1), lambda j: q.aio.put(j))
        measure("Queue.get (items waiting)", lambda: q.get(), lambda j: q.aio.get())
        measure("Queue.get empty, block=False", lambda: q.get(block=False), lambda j: q.aio.get(block=False))

        # Hand-off: a consumer already waiting in a blocking get, a producer puts.
        hq = apothic.Queue.from_name(f"bench-{uuid.uuid4().hex[:6]}", create_if_missing=True)
        got = threading.Semaphore(0)
        arrived: list[float] = []

        def consumer() -> None:
            while True:
                item = hq.get(timeout=60)
                if item is None:
                    return
                arrived.append(time.perf_counter())
                got.release()

        t = threading.Thread(target=consumer, daemon=True)
        t.start()
        hand: list[float] = []
        for i in range(max(n // 3, 20)):
            time.sleep(0.05)  # let the consumer wait again
            sent = time.perf_counter()
            hq.put(i)
            got.acquire()
            hand.append(arrived[-1] - sent)
        hq.put(None)
        rows.append(("put -> waiting get (hand-off)", hand, 0.0))

        stats = run_blocking(d._query("stats", result_type=None))
        qstats = run_blocking(q._query("stats", result_type=None))
        bare = handle = None  # drop the baseline's client while the interpreter is whole
        import gc

        gc.collect()

    print(f"machine: {machine()}")
    print(f"server: temporal dev server (temporal-dev.yaml settings); {n} sequential calls per row after "
          f"{args.warmup} warm-up; throughput with {c} at once")
    print(f"{'operation':34} {'median ms':>10} {'p95 ms':>8} {'seq. ops/s':>11} {'ops/s x' + str(c):>11}")
    for label, lat, rate in rows:
        med, p95 = summary(lat)
        seq = len(lat) / sum(lat)
        print(f"{label:34} {med:10.1f} {p95:8.1f} {seq:11.0f} {rate if rate else float('nan'):11.0f}")
    print(f"Dict runs (continue-as-new): {stats['runs']}, Queue runs: {qstats['runs']}")


if __name__ == "__main__":
    main()
