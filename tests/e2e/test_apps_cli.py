"""`apothic apps list|stop|remove` run as a user runs them, against the test server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ..conftest import ROOT, container_pids, wait_until
from .cli import apothic
from .test_examples import left_behind

pytestmark = pytest.mark.usefixtures("control_worker")


@pytest.mark.parametrize("cmd", [["apps"], ["apps", "list"], ["apps", "stop"], ["apps", "remove"]])
def test_every_apps_command_has_help(cmd: list[str]) -> None:
    assert apothic(*cmd, "--help").stdout.startswith("usage: apothic apps")


def test_stop_and_remove_say_what_they_do_to_jobs_and_schedules() -> None:
    stop = apothic("apps", "stop", "--help").stdout
    assert "stays deployed" in stop and "schedules keep firing" in stop.replace("\n", " ")
    remove = " ".join(apothic("apps", "remove", "--help").stdout.split())
    assert "cancel its running jobs and maps" in remove and "delete its schedules" in remove


def listed(app: str) -> dict | None:
    return next((a for a in json.loads(apothic("apps", "list", "--json").stdout) if a["app"] == app), None)


def call(app: str, function: str) -> subprocess.CompletedProcess:
    """``RemoteFunction.from_name(app, function).remote()`` in a fresh interpreter."""
    code = f"import apothic; print(apothic.RemoteFunction.from_name({app!r}, {function!r}).remote())"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ),
                          cwd=str(ROOT), timeout=180, check=False)


def test_list_stop_remove(tmp_path: Path, app_name: str) -> None:
    script = tmp_path / "deployed.py"
    script.write_text(textwrap.dedent(f"""
        import apothic

        app = apothic.App("{app_name}")

        @app.function(schedule=apothic.Period(seconds=2))
        def tick() -> str:
            return "tick"

        @app.function()
        def hello() -> str:
            return "hello"
    """))
    try:
        assert f"{app_name}: deployed version 1 (hello, tick)" in apothic("deploy", str(script)).stdout
        assert call(app_name, "hello").stdout.strip() == "hello"
        wait_until(lambda: (listed(app_name) or {}).get("containers", 0) >= 1, timeout=60,
                   what="the app's containers listed")
        row = listed(app_name)
        assert row is not None
        assert row["version"] == 1 and row["functions"] == ["hello", "tick"] and not row["ephemeral"]
        assert row["schedules"] == {"tick": "every 2s"} and row["deployed_at"].startswith("20")
        table = apothic("apps", "list").stdout.splitlines()
        assert table[0].split() == ["APP", "VERSION", "DEPLOYED", "(UTC)", "CONTAINERS", "FUNCTIONS"]
        (line,) = [i for i, t in enumerate(table) if t.startswith(app_name + " ")]
        assert table[line].split()[1] == "1" and table[line].endswith("hello, tick")
        assert table[line + 1].split() == ["schedule", "tick:", "every", "2s"]

        # stop: the containers drain and go; the app stays deployed and its schedule keeps firing.
        out = apothic("apps", "stop", app_name).stdout.strip()
        assert out.startswith(f"{app_name}: stopped ") and out.endswith("all released; the app stays deployed"), out
        assert call(app_name, "hello").stdout.strip() == "hello"
        jobs = json.loads(apothic("schedules", "list", "--app", app_name, "--json").stdout)
        assert [s["function"] for s in jobs] == ["tick"] and not jobs[0]["paused"]

        # remove: schedules, fleets, containers and the registry gone; calls fail clearly.
        out = apothic("apps", "remove", app_name).stdout.strip()
        assert out.startswith(f"{app_name}: removed version 1") and out.endswith(
            "its schedules, fleets and containers are gone"), out
        assert container_pids(app_name, supervisors=True) == []
        assert json.loads(apothic("schedules", "list", "--app", app_name, "--json").stdout) == []
        assert asyncio.run(left_behind(app_name)) == []
        assert listed(app_name) is None
        failed = call(app_name, "hello")
        assert failed.returncode == 1
        assert f"NotFoundError: app '{app_name}' is not deployed on " in failed.stderr, failed.stderr
        assert ": it was removed at 20" in failed.stderr and "deploy it again" in failed.stderr, failed.stderr
        for cmd in ("stop", "remove"):
            again = apothic("apps", cmd, app_name, check=False)
            assert again.returncode == 1 and "it was removed at" in again.stderr, again.stderr
            assert again.stderr.startswith("apothic: error: "), again.stderr
        gone = apothic("apps", "remove", app_name, "--allow-missing").stdout.strip()
        assert gone == f"{app_name}: was not deployed; nothing of it runs"
    finally:
        apothic("apps", "remove", app_name, "--allow-missing", check=False)


def test_remove_cancels_running_jobs(tmp_path: Path, app_name: str) -> None:
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent(f"""
        import time
        import apothic

        app = apothic.App("{app_name}")

        @app.function()
        def forever() -> None:
            time.sleep(600)
    """))
    apothic("deploy", str(script))
    code = (f"import apothic; j = apothic.RemoteFunction.from_name({app_name!r}, 'forever').spawn(); "
            "print(j.job_id)")
    job_id = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ),
                            cwd=str(ROOT), timeout=120, check=True).stdout.strip()
    wait_until(lambda: apothic("jobs", "status", job_id).stdout.splitlines()[0] == "running", timeout=60,
               what="the job to run")
    out = apothic("apps", "remove", app_name).stdout.strip()
    assert out == f"{app_name}: removed version 1, cancelled 1 running job(s); its schedules, fleets and " \
                  "containers are gone"
    assert apothic("jobs", "status", job_id).stdout.splitlines()[0] == "cancelled"
    assert container_pids(app_name, supervisors=True) == []


def test_bad_values_are_refused() -> None:
    bad = apothic("apps", "stop", "no spaces", check=False)
    assert bad.returncode == 1 and "app name 'no spaces' is invalid" in bad.stderr, bad.stderr
    wait = apothic("apps", "stop", "some-app", "--wait", "-1", check=False)
    assert wait.returncode == 1 and "--wait -1: allowed: 0 or more seconds" in wait.stderr, wait.stderr
    missing = apothic("apps", "stop", "never-deployed-app-x", check=False)
    assert missing.returncode == 1 and "app 'never-deployed-app-x' is not deployed on" in missing.stderr
