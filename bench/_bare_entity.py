"""The baseline of bench/coord.py: a bare entity workflow, one update to write, one query to read.

What a hand-written Temporal key-value workflow costs: no pickling, no key ids, no validators,
no retries. Tuned like Apothic's control worker (unsandboxed, 20 pollers), in its own process.
"""

from __future__ import annotations

from _bare import serve
from temporalio import workflow

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


if __name__ == "__main__":
    serve(TASK_QUEUE, [BareEntity], ())
