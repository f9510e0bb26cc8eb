"""What the bare Temporal baselines share: a worker tuned like Apothic's control worker
(unsandboxed, 20 workflow pollers, 10 activity pollers), in its own process, until SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Sequence

from temporalio.client import Client
from temporalio.worker import (
    PollerBehaviorSimpleMaximum,
    UnsandboxedWorkflowRunner,
    Worker,
)


def serve(task_queue: str, workflows: Sequence[type], activities: Sequence[Callable] = ()) -> None:
    async def main() -> None:
        client = await Client.connect(os.environ["APOTHIC_TEMPORAL_ADDRESS"])
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=list(workflows),
            activities=list(activities),
            workflow_runner=UnsandboxedWorkflowRunner(),
            workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(20),
            activity_task_poller_behavior=PollerBehaviorSimpleMaximum(10),
        ):
            await stop.wait()

    asyncio.run(main())
