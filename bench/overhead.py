"""Latency of ``remote()`` on a warm container against a bare Temporal workflow.

Both run on the same dev server (temporal-dev.yaml's settings, a fresh database) in the
same run; each side is called sequentially, one call at a time, after a warm-up.

    python bench/overhead.py [--calls 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import dev_server, machine, process, summary, timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()

    with dev_server() as address, process("-m", "apothic.worker"), process("bench/_bare_worker.py"):
        import apothic
        from temporalio.client import Client

        app = apothic.App("bench-overhead")

        @app.function()
        def noop(x: int) -> int:
            return x

        app.deploy()
        for i in range(args.warmup):
            noop.remote(i)
        apothic_s = timed(lambda: noop.remote(1), args.calls)

        from _bare_worker import TASK_QUEUE, BareWorkflow

        from apothic._control._loop import run_blocking

        # The same kind of client: connected once, driven from the same background loop.
        client = run_blocking(Client.connect(address))

        def bare() -> None:
            run_blocking(client.execute_workflow(BareWorkflow.run, 1, id=f"bare-{uuid.uuid4()}", task_queue=TASK_QUEUE))

        for _ in range(args.warmup):
            bare()
        bare_s = timed(bare, args.calls)

    a_med, a_p95 = summary(apothic_s)
    b_med, b_p95 = summary(bare_s)
    print(f"machine: {machine()}")
    print(f"server: temporal dev server (temporal-dev.yaml settings), {args.calls} sequential calls each")
    print(f"{'':32} {'median ms':>10} {'p95 ms':>10}")
    print(f"{'apothic remote() warm':32} {a_med:10.1f} {a_p95:10.1f}")
    print(f"{'bare workflow + 1 activity':32} {b_med:10.1f} {b_p95:10.1f}")
    print(f"{'ratio (apothic / bare)':32} {a_med / b_med:10.2f} {a_p95 / b_p95:10.2f}")


if __name__ == "__main__":
    os.environ.setdefault("APOTHIC_CONTAINER_IDLE_S", "600")
    main()
