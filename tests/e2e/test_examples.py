"""Every example in examples/, run as a user runs it: the `apothic run` command its docstring
shows, against the session's server, checked against its "Expected output" block, then checked
to have left nothing behind.

An example's docstring names its command (the first line that starts with
``apothic run examples/<file>``; else ``apothic run examples/<file>``) and may list, under a line
``Expected output:``, indented lines that must appear in its output (stdout and stderr together),
in that order, each within one line.
"""

from __future__ import annotations

import ast
import asyncio
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import ROOT, container_pids

pytestmark = pytest.mark.usefixtures("control_worker")

EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def command_and_expected(path: Path) -> tuple[list[str], list[str]]:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    rel = f"examples/{path.name}"
    lines = doc.splitlines()
    command = next((shlex.split(line.strip()) for line in lines if line.strip().startswith(f"apothic run {rel}")),
                   ["apothic", "run", rel])
    expected: list[str] = []
    if "Expected output:" in lines:
        for line in lines[lines.index("Expected output:") + 1:]:
            if not line.strip():
                break
            expected.append(line.strip())
    return command[1:], expected


def in_order(expected: list[str], output: list[str]) -> list[str]:
    """The expected lines not found, in order, each inside one output line."""
    at = 0
    for i, want in enumerate(expected):
        while at < len(output) and want not in output[at]:
            at += 1
        if at == len(output):
            return expected[i:]
        at += 1
    return []


async def left_behind(app: str) -> list[str]:
    """What still runs of ``app``: workflows (jobs, maps, fleets, containers, its registry) and schedules."""
    from temporalio.client import Client

    client = await Client.connect(os.environ["APOTHIC_TEMPORAL_ADDRESS"])
    found = []
    for query in (f"ApothicApp = '{app}' AND ExecutionStatus = 'Running'",
                  f"WorkflowId STARTS_WITH 'apothic-fleet:{app}:' AND ExecutionStatus = 'Running'",
                  f"WorkflowId STARTS_WITH 'apothic-container:{app}:' AND ExecutionStatus = 'Running'",
                  f"WorkflowId = 'apothic-app:{app}' AND ExecutionStatus = 'Running'"):
        found += [wf.id async for wf in client.list_workflows(query)]
    found += [s.id async for s in await client.list_schedules() if s.id.startswith(f"apothic-schedule:{app}:")]
    return found


def test_every_example_has_a_command_and_output_to_check() -> None:
    assert len(EXAMPLES) >= 9, [p.name for p in EXAMPLES]
    for path in EXAMPLES:
        argv, _ = command_and_expected(path)
        assert argv[:2] == ["run", f"examples/{path.name}"] or argv[1].startswith(f"examples/{path.name}::"), path


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example(path: Path) -> None:
    argv, expected = command_and_expected(path)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "apothic", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=dict(os.environ), cwd=str(ROOT), timeout=600)
    output = proc.stdout.splitlines()
    shown = f"$ apothic {shlex.join(argv)}  ({time.monotonic() - started:.1f} s, exit {proc.returncode})\n{proc.stdout}"
    assert proc.returncode == 0, shown
    assert "Traceback" not in proc.stdout and "apothic: error" not in proc.stdout, shown
    assert not in_order(expected, output), f"missing, in order: {in_order(expected, output)}\n{shown}"
    # The run deployed the app for itself and removed it: nothing of it is left.
    first = next(line for line in output if " deployed for this run " in line)
    app = first.split(":")[0]
    assert output[-1] == f"{app}: stopped; its schedules, fleets and containers are gone", shown
    assert asyncio.run(left_behind(app)) == [], shown
    assert container_pids(app) == [], shown
