"""The container side of job events against a real server: order, resend after an outage, flush.

A small recording workflow stands in for the job (only its ``runtime_events`` signal matters
here); the server is a dev server of this test's own, stopped mid-run until a send has really
failed (the publisher's client records each send and its outcome), then restarted, so that
the batch is resent under its number.
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
from temporalio.client import Client, Interceptor, OutboundInterceptor, SignalWorkflowInput
from temporalio.service import RPCError
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


class SendLog(Interceptor):
    """Records each ``runtime_events`` signal the publisher's client sends: its batch number
    and how the call ended (``ok`` or the RPC status it failed with)."""

    def __init__(self) -> None:
        self.sends: list[tuple[int, str]] = []

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        log = self

        class Recording(OutboundInterceptor):
            async def signal_workflow(self, input: SignalWorkflowInput) -> None:
                if input.signal != RUNTIME_EVENTS_SIGNAL:
                    return await super().signal_workflow(input)
                batch = input.args[0].batch
                try:
                    await super().signal_workflow(input)
                except RPCError as e:
                    log.sends.append((batch, e.status.name if e.status else "?"))
                    raise
                log.sends.append((batch, "ok"))

        return Recording(next)


async def until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.1)


def test_the_publisher_sends_in_order_resends_after_an_outage_and_flushes(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "temporal.db"
    server = start_dev_server(db, port)
    log = tmp_path / "log"
    log.write_text("")
    item = WorkItem(print, (), {}, log_path=str(log))
    settings = dataclasses.replace(load_settings(), address=f"127.0.0.1:{port}", embedded=False)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    sends = SendLog()

    async def scenario() -> list[JobEventsIn]:
        nonlocal server
        worker_client = await connect(settings, start_embedded=False)
        # The publisher's own client: the same connection, with the send log in its path.
        client = Client(**{**worker_client.config(), "interceptors": [sends]})
        async with Worker(worker_client, task_queue=queue, workflows=[RecordRuntimeEvents],
                          workflow_runner=UnsandboxedWorkflowRunner()):
            handle = await client.start_workflow(RecordRuntimeEvents.run, id="job-1", task_queue=queue)
            pub = EventPublisher(client, "job-1", 2, "c-1", item)
            pub.start()
            with open(log, "a") as f:
                f.write("before\n")
            await until(lambda: sends.sends == [(1, "ok")], 30, "`started` and 'before' to go out as batch 1")
            stop(server)  # the next send fails (after the client's own retries give up) ...
            await asyncio.to_thread(pub.output, 0, {"a": 1})
            await until(lambda: any(b == 2 and how != "ok" for b, how in sends.sends), 60, "a failed send of batch 2")
            server = start_dev_server(db, port)  # ... and is resent once the server is back
            await until(lambda: (2, "ok") in sends.sends, 60, "batch 2 to be resent")
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
    # The client saw batch 2 fail at least once, then succeed once; nothing after it was sent
    # before it went through (a resend keeps its number), and no batch went through twice.
    failed = [how for b, how in sends.sends if b == 2 and how != "ok"]
    assert failed and set(failed) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN"}, sends.sends
    numbers = [b for b, _ in sends.sends]
    assert numbers == sorted(numbers), sends.sends
    assert [b for b, how in sends.sends if how == "ok"] == [1, 2, 3], sends.sends
    # The workflow got each batch once, in order, none lost or added twice across the outage.
    assert [b.batch for b in sent] == [1, 2, 3]
    assert {(b.attempt, b.container_id) for b in sent} == {(2, "c-1")}
    events = [e for b in sent for e in b.events]
    assert [e.event for e in events] == ["started", "log", "output", "log"]
    assert events[1].data["lines"] == ["before"]
    # Inside the event's free-form data the pickle arrives as its fields (as watchers read it).
    assert events[2].data["index"] == 0 and CloudPickled(**events[2].data["value"]).load() == {"a": 1}
    assert [b.batch for b in sent if any(e.event == "output" for e in b.events)] == [2]  # the resent batch
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
