"""Wiring: the control worker's Temporal Worker."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import PollerBehaviorSimpleMaximum, UnsandboxedWorkflowRunner, Worker

from apothic._control._client import connect
from apothic._control._config import Settings
from apothic._control._embedded import SEARCH_ATTRIBUTES
from apothic._trace import configure_from_env, flush
from apothic.activities import ControlActivities
from apothic.activities._liv import LivActivities
from apothic.workflows import ALL_WORKFLOWS
from apothic.workflows._dict import DictWorkflow
from apothic.workflows._queue import QueueWorkflow
from apothic.workflows._liv import LivWorkflow

log = logging.getLogger("apothic.worker")


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Register Apothic's search attributes (ApothicApp, ApothicFunction) if missing."""
    try:
        have = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        missing = {k: v for k, v in SEARCH_ATTRIBUTES.items() if k not in have.custom_attributes}
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=namespace,
                    search_attributes={k: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{v.upper()}") for k, v in missing.items()},
                )
            )
    except RPCError as e:  # e.g. no operator permission on a managed cluster
        log.warning("could not register search attributes %s: %s", sorted(SEARCH_ATTRIBUTES), e.message)


def build_worker(client: Client, settings: Settings) -> Worker:
    """The control worker for ``settings`` on an already connected ``client``.

    Workflows run unsandboxed (about 5 ms less per workflow task); they are kept
    deterministic by construction (no I/O, ``workflow.now()``, ``workflow.uuid4()``).
    """
    activities = ControlActivities(settings)
    return Worker(
        client,
        task_queue=settings.worker.control_task_queue,
        # LivWorkflow: generated functions (@apothic.liv); Dict/QueueWorkflow: apothic.Dict and apothic.Queue
        workflows=[*ALL_WORKFLOWS, LivWorkflow, DictWorkflow, QueueWorkflow],
        activities=[*activities.all(), *LivActivities(settings).all()],
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_cached_workflows=4000,
        workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(20),
        activity_task_poller_behavior=PollerBehaviorSimpleMaximum(10),
        graceful_shutdown_timeout=timedelta(seconds=10),
    )


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run a control worker until ``stop`` is set (or SIGTERM/SIGINT when ``stop`` is None).

    Its spans are exported where the ``OTEL_*`` variables say (``apothic/_trace``); its client
    carries the trace context of what it serves on to what it starts, with or without them.
    """
    configure_from_env("apothic-worker", {"apothic.task_queue": settings.worker.control_task_queue})
    # A payload not signed with the control plane's key fails its workflow (one of another key: its task).
    client = await connect(settings, start_embedded=False, in_workflows=True, traced=True)
    await ensure_search_attributes(client, settings.namespace)
    worker = build_worker(client, settings)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with worker:
            log.info("control worker polling %s at %s", settings.worker.control_task_queue, settings.address)
            await stop.wait()
    finally:
        flush()  # the spans of the last tasks
