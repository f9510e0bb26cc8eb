"""Throughput of ``map`` over no-op inputs on warm containers, against a bare Temporal
workflow fanning out the same number of activities, against separate ``spawn`` calls, and
against the previous way of reading a map's results (polling a query instead of the long poll).

All run on the same dev server (temporal-dev.yaml's settings, a fresh database) in the
same run. The bare fan-out keeps at most as many activities in flight as a map does (64).

    python bench/map_throughput.py [--inputs 5000] [--containers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import dev_server, machine, process  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=5000)
    parser.add_argument("--containers", type=int, default=2, help="max_containers of the mapped function")
    parser.add_argument("--spawns", type=int, default=None, help="how many separate spawns (default: --inputs)")
    args = parser.parse_args()
    n = args.inputs
    spawns = args.spawns or n

    with dev_server() as address, process("-m", "apothic.worker"), process("bench/_bare_fanout.py"):
        import apothic
        from apothic._control._loop import run_blocking
        from temporalio.client import Client

        app = apothic.App("bench-map")

        @app.function(max_containers=args.containers)
        def noop(x: int) -> int:
            return x

        app.deploy()
        noop.map(range(200))  # warm: start the containers

        started = time.perf_counter()
        out = noop.map(range(n))
        map_s = time.perf_counter() - started
        assert out == list(range(n))

        # The previous approach, in the same run: the client polls the query `results` every 10
        # to 200 ms instead of waiting in the workflow (what it falls back to when the map's
        # worker cannot answer the update wait_results).
        from apothic._invoke import _mapping

        long_poll = _mapping._wait_results

        async def no_long_poll(*args: object) -> None:
            return None

        _mapping._wait_results = no_long_poll
        try:
            started = time.perf_counter()
            assert noop.map(range(n)) == list(range(n))
            polled_s = time.perf_counter() - started
        finally:
            _mapping._wait_results = long_poll

        from _bare_fanout import TASK_QUEUE, FanOutWorkflow

        client = run_blocking(Client.connect(address))
        run_blocking(client.execute_workflow(FanOutWorkflow.run, args=[200, 64], id=f"warm-{uuid.uuid4()}", task_queue=TASK_QUEUE))
        started = time.perf_counter()
        count = run_blocking(
            client.execute_workflow(FanOutWorkflow.run, args=[n, 64], id=f"fanout-{uuid.uuid4()}", task_queue=TASK_QUEUE)
        )
        bare_s = time.perf_counter() - started
        assert count == n

        started = time.perf_counter()
        jobs = noop.spawn_map(range(spawns))
        results = [j.wait() for j in jobs]
        spawn_s = time.perf_counter() - started
        assert results == list(range(spawns))

    print(f"machine: {machine()}")
    print(f"server: temporal dev server (temporal-dev.yaml settings); map on {args.containers} warm containers")
    print(f"{'':44} {'inputs':>7} {'seconds':>8} {'inputs/s':>9}")
    print(f"{'apothic map()':44} {n:7} {map_s:8.2f} {n / map_s:9.0f}")
    print(f"{'apothic map(), query polling (previous)':44} {n:7} {polled_s:8.2f} {n / polled_s:9.0f}")
    print(f"{'bare workflow fanning out activities (64)':44} {n:7} {bare_s:8.2f} {n / bare_s:9.0f}")
    print(f"{'apothic spawn() per input, then wait()':44} {spawns:7} {spawn_s:8.2f} {spawns / spawn_s:9.0f}")
    print(f"{'map / bare fan-out':44} {'':7} {'':8} {(n / map_s) / (n / bare_s):9.2f}")


if __name__ == "__main__":
    os.environ.setdefault("APOTHIC_CONTAINER_IDLE_S", "600")
    main()
