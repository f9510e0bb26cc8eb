"""A second process finds deployed functions by name and re-attaches to jobs by id."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from apothic import App, Job, JobStatus

from ..conftest import ROOT

pytestmark = pytest.mark.usefixtures("control_worker")


def run_python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=dict(os.environ),
        cwd=str(ROOT), timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_from_name_and_from_id_in_another_process(app_name: str) -> None:
    app = App(app_name)

    @app.function()
    def greet(name: str, punctuation: str = "!") -> str:
        time.sleep(1)
        return f"hello {name}{punctuation}"

    app.deploy()
    job = greet.spawn("first")
    out = run_python(f"""
        import apothic
        fn = apothic.RemoteFunction.from_name("{app_name}", "greet")
        print(fn.remote("other", punctuation="?"))
        again = apothic.Job.from_id("{job.job_id}")
        print(again.wait(), again.status())
        spawned = fn.spawn("detached")
        print(spawned.job_id)
    """)
    lines = out.strip().splitlines()
    assert lines[0] == "hello other?"
    assert lines[1] == "hello first! completed"
    # The job the other process spawned is found again here, after that process exited.
    later = Job.from_id(lines[2])
    assert later.wait() == "hello detached!"
    assert later.status() is JobStatus.COMPLETED
