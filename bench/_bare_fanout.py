"""The baseline for maps: one bare Temporal workflow fanning out N no-op activities,
at most ``in_flight`` at a time, run by a tuned worker in its own process."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import PollerBehaviorSimpleMaximum, UnsandboxedWorkflowRunner, Worker

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


async def main() -> None:
    client = await Client.connect(os.environ["APOTHIC_TEMPORAL_ADDRESS"])
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[FanOutWorkflow],
        activities=[noop],
        workflow_runner=UnsandboxedWorkflowRunner(),
        workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(20),
        activity_task_poller_behavior=PollerBehaviorSimpleMaximum(10),
    ):
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
