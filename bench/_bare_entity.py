"""The baseline of bench/coord.py: a bare entity workflow, one update to write, one query to read.

What a hand-written Temporal key-value workflow costs: no pickling, no key ids, no validators,
no retries. Tuned like Apothic's control worker (unsandboxed, 20 pollers), in its own process.
"""

from __future__ import annotations

import asyncio
import os
import signal

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import PollerBehaviorSimpleMaximum, UnsandboxedWorkflowRunner, Worker

TASK_QUEUE = "bench-bare-entity"


@workflow.defn
class BareEntity:
    @workflow.init
    def __init__(self, data: dict[str, str]) -> None:
        self.data = dict(data)

    @workflow.run
    async def run(self, data: dict[str, str]) -> None:
        await workflow.wait_condition(lambda: workflow.info().is_continue_as_new_suggested())
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self.data)

    @workflow.update
    async def set(self, kv: list[str]) -> None:
        self.data[kv[0]] = kv[1]

    @workflow.query
    def get(self, key: str) -> str | None:
        return self.data.get(key)


async def main() -> None:
    client = await Client.connect(os.environ["APOTHIC_TEMPORAL_ADDRESS"])
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[BareEntity],
        workflow_runner=UnsandboxedWorkflowRunner(),
        workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(20),
    ):
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
