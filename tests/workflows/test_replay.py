"""Recorded histories replay on the current workflow code: a change that would break running
workflows (non-determinism) fails here. Histories come from record_histories.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from apothic.workflows import ALL_WORKFLOWS

HISTORIES = sorted((Path(__file__).resolve().parent / "histories").glob("*.json"))


def test_every_workflow_type_has_a_recorded_history() -> None:
    types = {p.name.rsplit("-", 1)[0] for p in HISTORIES}
    assert {"AppWorkflow", "InvocationWorkflow", "FleetWorkflow", "ContainerWorkflow", "MapWorkflow"} <= types


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem.split("-")[0] + "-replay", path.read_text())
    replayer = Replayer(workflows=ALL_WORKFLOWS, workflow_runner=UnsandboxedWorkflowRunner())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
