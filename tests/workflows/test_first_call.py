"""The first call of a new version starts its fleet without a failed step in its history."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus

from apothic import App
from apothic._contracts import fleet_workflow_id

pytestmark = pytest.mark.usefixtures("control_worker")


async def event_types(address: str, workflow_id: str) -> list[str]:
    client = await Client.connect(address)
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return [EventType.Name(e.event_type) for e in history.events]


async def fleet_status(address: str, workflow_id: str) -> WorkflowExecutionStatus | None:
    client = await Client.connect(address)
    return (await client.get_workflow_handle(workflow_id).describe()).status


def test_the_first_call_of_a_new_version_has_no_failed_event(temporal: str, app_name: str) -> None:
    app = App(app_name)

    @app.function()
    def double(x: int) -> int:
        return 2 * x

    version = app.deploy().version
    job = double.spawn(21)
    assert job.wait() == 42
    types = asyncio.run(event_types(temporal, job.job_id))
    assert [t for t in types if t.endswith("_FAILED")] == [], types
    # It did ask for capacity (no container ran yet): the fleet of this version was started.
    assert "EVENT_TYPE_MARKER_RECORDED" in types, types
    assert asyncio.run(fleet_status(temporal, fleet_workflow_id(app_name, "double", version))) is not None
