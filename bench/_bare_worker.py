"""The baseline: a bare Temporal workflow that runs one no-op activity.

Tuned like Apothic's control worker (unsandboxed, 20 pollers), in its own process.
"""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import PollerBehaviorSimpleMaximum, UnsandboxedWorkflowRunner, Worker

TASK_QUEUE = "bench-bare"


@activity.defn
async def noop(x: int) -> int:
    return x


@workflow.defn
class BareWorkflow:
    @workflow.run
    async def run(self, x: int) -> int:
        return await workflow.execute_activity(noop, x, start_to_close_timeout=timedelta(seconds=30))


async def main() -> None:
    client = await Client.connect(os.environ["APOTHIC_TEMPORAL_ADDRESS"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[BareWorkflow],
        activities=[noop],
        workflow_runner=UnsandboxedWorkflowRunner(),
        workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(20),
        activity_task_poller_behavior=PollerBehaviorSimpleMaximum(10),
    ):
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
