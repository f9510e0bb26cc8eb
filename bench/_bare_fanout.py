"""The baseline for maps: one bare Temporal workflow fanning out N no-op activities,
at most ``in_flight`` at a time, run by a tuned worker in its own process."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from _bare import serve
from temporalio import activity, workflow

TASK_QUEUE = "bench-fanout"


@activity.defn
async def noop(x: int) -> int:
    return x


@workflow.defn
class FanOutWorkflow:
    @workflow.run
    async def run(self, n: int, in_flight: int) -> int:
        semaphore = asyncio.Semaphore(in_flight)

        async def one(i: int) -> int:
            async with semaphore:
                return await workflow.execute_activity(noop, i, start_to_close_timeout=timedelta(seconds=60))

        results = await asyncio.gather(*(one(i) for i in range(n)))
        return len(results)


if __name__ == "__main__":
    serve(TASK_QUEUE, [FanOutWorkflow], [noop])
