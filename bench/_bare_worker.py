"""The baseline: a bare Temporal workflow that runs one no-op activity.

Tuned like Apothic's control worker (unsandboxed, 20 pollers), in its own process.
"""

from __future__ import annotations

from datetime import timedelta

from _bare import serve
from temporalio import activity, workflow

TASK_QUEUE = "bench-bare"


@activity.defn
async def noop(x: int) -> int:
    return x


@workflow.defn
class BareWorkflow:
    @workflow.run
    async def run(self, x: int) -> int:
        return await workflow.execute_activity(noop, x, start_to_close_timeout=timedelta(seconds=30))


if __name__ == "__main__":
    serve(TASK_QUEUE, [BareWorkflow], [noop])
