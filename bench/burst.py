"""Autoscaling on a burst: inputs into a cold function with ``max_containers`` and
``@concurrent(max_inputs=...)`` (and the same for ``@batched``), against the ideal in the same run.

Each case deploys a fresh function (a cold fleet), submits the burst, and reports the wall
time from the first submission to the last result against the ideal: the cold start measured
in the same run (first submission to the first input starting in a container) plus
``inputs x seconds / slots``. A timeline (every 0.5 s: containers alive, inputs running, inputs
done) follows, from the fleet's ``status`` sampled every 0.25 s, the ContainerWorkflows' start
and close times, and each input's own start and end (the function reports them). It waits
until every container has drained (the idle window is --idle-s) so the timeline shows that too.

Cases: ``@concurrent(max_inputs=M)`` through ``spawn_map`` (jobs, with its back-pressure) and
through ``map``; ``@batched(max_batch_size=M)`` through ``spawn_map`` (calls per batch), and
one input per call with one slot per container (what ``@batched`` is compared with). A case
whose mark the decorator refuses (not built) runs without it, said in its title.

    python bench/burst.py [--provider process|docker] [--inputs 200] [--seconds 0.5]
                          [--containers 4] [--max-inputs 8] [--idle-s 5] [--cases all]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import dev_server, machine, process  # noqa: E402

CASES = ("concurrent-spawn", "concurrent-map", "batched", "one-per-call")


class FleetSampler:
    """Samples the fleet's status every 0.25 s: when each container was first and last seen."""

    def __init__(self, address: str, fleet_id: str) -> None:
        self.address = address
        self.fleet_id = fleet_id
        self.seen: dict[str, list[float]] = {}
        self.max_containers_seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        from temporalio.client import Client

        from apothic._contracts import FleetStatus

        client = await Client.connect(self.address)
        handle = client.get_workflow_handle(self.fleet_id)
        while not self._stop.is_set():
            now = time.time()
            try:
                status = await handle.query("status", result_type=FleetStatus)
            except Exception:  # noqa: BLE001 - not started yet, or ended
                status = None
            if status is not None:
                self.max_containers_seen = max(self.max_containers_seen, len(status.containers))
                for c in status.containers:
                    self.seen.setdefault(c.container_id, [now, now])[1] = now
            await asyncio.sleep(0.25)

    def start(self) -> "FleetSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def container_times(address: str, app: str, fn: str, ids: list[str]) -> dict[str, tuple[float, float | None]]:
    """Start and close time (epoch seconds) of each container's workflow."""
    from temporalio.client import Client

    from apothic._contracts import container_workflow_id

    async def read() -> dict[str, tuple[float, float | None]]:
        client = await Client.connect(address)
        out = {}
        for cid in ids:
            desc = await client.get_workflow_handle(container_workflow_id(app, fn, 1, cid)).describe()
            out[cid] = (desc.start_time.timestamp(), desc.close_time.timestamp() if desc.close_time else None)
        return out

    return asyncio.run(read())


def job_times(address: str, job_ids: list[str]) -> list[tuple[float, float]]:
    """When each job's workflow started (its submission) and closed, epoch seconds."""
    from temporalio.client import Client

    async def read() -> list[tuple[float, float]]:
        client = await Client.connect(address)
        descs = await asyncio.gather(*(client.get_workflow_handle(j).describe() for j in job_ids))
        return [(d.start_time.timestamp(), d.close_time.timestamp() if d.close_time else math.inf) for d in descs]

    return asyncio.run(read())


def fleet_ended(address: str, fleet_id: str) -> bool:
    from temporalio.client import Client, WorkflowExecutionStatus

    async def read() -> bool:
        client = await Client.connect(address)
        return (await client.get_workflow_handle(fleet_id).describe()).status != WorkflowExecutionStatus.RUNNING

    return asyncio.run(read())


def define(app: Any, case: str, seconds: float, containers: int, m: int) -> tuple[Any, str, int]:
    """The case's function, its title (what really runs) and its slots per container."""
    import apothic

    def body(x: int) -> tuple[str, int, float, float, int]:
        start = time.time()
        time.sleep(seconds)
        return os.environ["APOTHIC_CONTAINER_ID"], x, start, time.time(), 1

    def batch_body(xs: list[int]) -> list[tuple[str, int, float, float, int]]:
        start = time.time()
        time.sleep(seconds)  # one call of the batch costs what one input costs alone
        end = time.time()
        return [(os.environ["APOTHIC_CONTAINER_ID"], x, start, end, len(xs)) for x in xs]

    name = f"burst_{case.replace('-', '_')}"
    if case == "one-per-call":
        body.__name__ = name
        return _plain(app, body, containers), f"one input per call, 1 slot per container x {containers} containers", 1
    try:
        if case == "batched":
            batch_body.__name__ = name
            fn = app.function(max_containers=containers)(apothic.batched(max_batch_size=m, wait_ms=50)(batch_body))
            return fn, f"@batched(max_batch_size={m}, wait_ms=50) x {containers} containers", m
        body.__name__ = name
        fn = app.function(max_containers=containers)(apothic.concurrent(max_inputs=m)(body))
        return fn, f"@concurrent(max_inputs={m}) x {containers} containers", m
    except apothic.InvalidError as e:  # the mark is not built here: run one input at a time, and say so
        print(f"  ({case}: the decorator refused the mark, running without it: {str(e).splitlines()[-1][:200]})")
        if case == "batched":
            return None, "", 0
        body.__name__ = name
        return _plain(app, body, containers), f"WITHOUT @concurrent (refused): 1 slot per container x {containers}", 1


def _plain(app: Any, body: Any, containers: int) -> Any:
    return app.function(max_containers=containers)(body)


def run_case(address: str, case: str, args: argparse.Namespace) -> dict[str, Any] | None:
    import apothic

    app = apothic.App(f"burst-{case}-{uuid.uuid4().hex[:6]}")
    fn, title, per_container = define(app, case, args.seconds, args.containers, args.max_inputs)
    if fn is None:
        print(f"\n== {case}: skipped (@batched is refused by this build)")
        return None
    app.deploy()
    n = args.inputs
    slots = per_container * args.containers
    fleet_id = f"apothic-fleet:{app.name}:{fn.function_name}:v1"
    sampler = FleetSampler(address, fleet_id).start()
    t0 = time.time()
    if case == "concurrent-map":
        results = fn.map(range(n), timeout_s=600)
        how = "map"
    else:
        jobs = fn.spawn_map(range(n))
        t_submitted = time.time()
        results = [job.wait(timeout_s=600) for job in jobs]
        how = "spawn_map"
    t_done = time.time()
    spans = job_times(address, [job.job_id for job in jobs]) if how == "spawn_map" else []
    rows = list(results)  # a @batched function returns one element per input
    assert sorted(r[1] for r in rows) == list(range(n)), "lost or repeated inputs"
    deadline = time.time() + args.idle_s + 120
    while not fleet_ended(address, fleet_id) and time.time() < deadline:
        time.sleep(0.5)
    sampler.stop()
    times = container_times(address, app.name, fn.function_name, list(sampler.seen))
    cold = min(r[2] for r in rows) - t0
    wall = t_done - t0
    ideal = cold + n * args.seconds / slots
    calls = Counter((r[0], r[2]) for r in rows)  # one (container, start) per call
    sizes = Counter(calls.values())

    print(f"\n== {title}, {how}, {n} inputs x {args.seconds:g} s -> {slots} slots")
    print(f"  wall (first submission -> last result): {wall:6.2f} s")
    print(f"  cold start (first submission -> first input starts): {cold:6.2f} s")
    print(f"  ideal (cold start + {n} x {args.seconds:g} s / {slots} slots): {ideal:6.2f} s"
          f"  -> {100 * ideal / wall:.0f} % of ideal")
    print(f"  containers: {len(times)} started (at most {sampler.max_containers_seen} at once, "
          f"max_containers={args.containers}); calls: {len(calls)}"
          + (f", inputs per call: {dict(sorted(sizes.items()))}" if case == "batched" else ""))
    for cid, (start, close) in sorted(times.items(), key=lambda kv: kv[1][0]):
        first = min((r[2] for r in rows if r[0] == cid), default=None)
        served = sum(1 for r in rows if r[0] == cid)
        print(f"    {cid}: started +{start - t0:5.2f} s, first input +{(first or start) - t0:5.2f} s, "
              f"{served:4d} inputs, drained +{(close - t0) if close else float('nan'):6.2f} s")
    end = max([t_done] + [c for _, c in times.values() if c])
    if spans:
        lag = sorted(close - r[3] for (_, close), r in zip(spans, rows))
        print(f"  spawn_map returned after {t_submitted - t0:.2f} s (its back-pressure: at most "
              f"{slots} slots + max_pending_tasks unfinished jobs); a job closed {lag[len(lag) // 2]:.2f} s "
              f"(median; max {lag[-1]:.2f} s) after its input ended")
    print(f"  {'t (s)':>6} {'containers':>10} {'submitted':>9} {'in flight':>9} {'done':>5}"
          + (f" {'closed':>6}" if spans else ""))
    steps = math.ceil((end - t0) / 0.5) + 1
    for i in range(steps):
        t = t0 + i * 0.5
        alive = sum(1 for s, c in times.values() if s <= t and (c is None or c > t))
        running = sum(1 for r in rows if r[2] <= t < r[3])
        done = sum(1 for r in rows if r[3] <= t)
        submitted = sum(1 for s, _ in spans if s <= t) if spans else n
        closed = f" {sum(1 for _, c in spans if c <= t):6d}" if spans else ""
        print(f"  {i * 0.5:6.1f} {alive:10d} {submitted:9d} {running:9d} {done:5d}{closed}")
    return {"case": case, "title": title, "how": how, "wall": wall, "ideal": ideal, "cold": cold,
            "containers": len(times), "calls": len(calls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=("process", "docker"), default="process")
    parser.add_argument("--inputs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--containers", type=int, default=4)
    parser.add_argument("--max-inputs", type=int, default=8)
    parser.add_argument("--idle-s", type=float, default=5.0, help="the containers' idle window")
    parser.add_argument("--cases", default="all", help=f"comma-separated, of {', '.join(CASES)}")
    args = parser.parse_args()
    cases = CASES if args.cases == "all" else tuple(c.strip() for c in args.cases.split(","))
    os.environ["APOTHIC_PROVIDERS"] = args.provider
    os.environ["APOTHIC_CONTAINER_IDLE_S"] = f"{args.idle_s:g}"

    print(f"machine: {machine()}")
    print(f"provider: {args.provider}; server: temporal dev server (temporal-dev.yaml settings); "
          f"idle window {args.idle_s:g} s")
    with dev_server() as address, process("-m", "apothic.worker"):
        summary = [r for r in (run_case(address, case, args) for case in cases) if r]
    print(f"\n{'case':60} {'wall s':>7} {'ideal s':>8} {'cold s':>7} {'calls':>6}")
    for r in summary:
        print(f"{r['title'] + ' (' + r['how'] + ')':60} {r['wall']:7.2f} {r['ideal']:8.2f} {r['cold']:7.2f} {r['calls']:6d}")


if __name__ == "__main__":
    main()
