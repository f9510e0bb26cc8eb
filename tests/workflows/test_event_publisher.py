"""The container side of job events against a real server: order, resend after an outage, flush.

A small recording workflow stands in for the job (only its ``runtime_events`` signal matters
here); the server is a dev server of this test's own, stopped and restarted mid-run so that a
send really fails and is resent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from apothic._control._client import connect
from apothic._control._config import load_settings
from apothic._contracts import RUNTIME_EVENTS_SIGNAL, JobEventsIn
from apothic._data._serialization import CloudPickled
from apothic.runtime._events import EventPublisher, OutputError
from apothic.runtime._executor import WorkItem

from ..conftest import free_port, start_dev_server, stop


@workflow.defn(name="test.RecordRuntimeEvents")
class RecordRuntimeEvents:
    def __init__(self) -> None:
        self.batches: list[JobEventsIn] = []

    @workflow.signal(name=RUNTIME_EVENTS_SIGNAL)
    def runtime_events(self, batch: JobEventsIn) -> None:
        self.batches.append(batch)

    @workflow.query
    def got(self) -> list[JobEventsIn]:
        return self.batches

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


def test_the_publisher_sends_in_order_resends_after_an_outage_and_flushes(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "temporal.db"
    server = start_dev_server(db, port)
    log = tmp_path / "log"
    log.write_text("")
    item = WorkItem(print, (), {}, log_path=str(log))
    settings = dataclasses.replace(load_settings(), address=f"127.0.0.1:{port}", embedded=False)
    queue = f"q-{uuid.uuid4().hex[:8]}"

    async def scenario() -> list[JobEventsIn]:
        nonlocal server
        client = await connect(settings, start_embedded=False)
        async with Worker(client, task_queue=queue, workflows=[RecordRuntimeEvents],
                          workflow_runner=UnsandboxedWorkflowRunner()):
            handle = await client.start_workflow(RecordRuntimeEvents.run, id="job-1", task_queue=queue)
            pub = EventPublisher(client, "job-1", 2, "c-1", item)
            pub.start()
            with open(log, "a") as f:
                f.write("before\n")
            await asyncio.sleep(1.0)  # `started` and "before" went out in the first batch
            stop(server)  # the next sends fail ...
            await asyncio.to_thread(pub.output, 0, {"a": 1})
            await asyncio.sleep(1.5)
            server = start_dev_server(db, port)  # ... and are resent once it is back
            with open(log, "a") as f:
                f.write("after\nunfinished")
            await pub.close()
            deadline = time.monotonic() + 30
            while True:
                try:
                    return await handle.query(RecordRuntimeEvents.got)
                except Exception:  # noqa: BLE001 - the worker may still be reconnecting
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)

    try:
        sent = asyncio.run(scenario())
    finally:
        stop(server)
    # One batch per number, in order, none lost or added twice across the outage.
    assert [b.batch for b in sent] == list(range(1, len(sent) + 1))
    assert {(b.attempt, b.container_id) for b in sent} == {(2, "c-1")}
    events = [e for b in sent for e in b.events]
    assert [e.event for e in events] == ["started", "log", "output", "log"]
    assert events[1].data["lines"] == ["before"]
    # Inside the event's free-form data the pickle arrives as its fields (as watchers read it).
    assert events[2].data["index"] == 0 and CloudPickled(**events[2].data["value"]).load() == {"a": 1}
    assert events[3].data["lines"] == ["after", "unfinished"]


def test_outputs_that_cannot_travel_fail_the_generator(temporal: str) -> None:
    item = WorkItem(print, (), {}, log_path="")
    settings = dataclasses.replace(load_settings(), address=temporal, embedded=False)

    async def scenario() -> None:
        client = await connect(settings, start_embedded=False)
        pub = EventPublisher(client, "job-never-started", 1, "c-1", item)  # nothing is sent: it is never started
        with pytest.raises(OutputError, match="cannot be pickled"):
            await asyncio.to_thread(pub.output, 0, (x for x in ()))
        with pytest.raises(OutputError, match="at most 0.52 MB per item"):
            await asyncio.to_thread(pub.output, 1, os.urandom(600_000))

    asyncio.run(scenario())
