"""`apothic schedules ...` run as a user runs it, against the test server."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from ..conftest import wait_until
from .cli import apothic

pytestmark = pytest.mark.usefixtures("control_worker")


@pytest.mark.parametrize("cmd", [["schedules"], ["schedules", "list"], ["schedules", "pause"], ["schedules", "resume"],
                                 ["schedules", "trigger"], ["schedules", "backfill"], ["schedules", "delete"]])
def test_every_schedules_command_has_help(cmd: list[str]) -> None:
    out = apothic(*cmd, "--help").stdout
    assert out.startswith("usage: apothic schedules")


def listed(app: str) -> list[dict]:
    return json.loads(apothic("schedules", "list", "--app", app, "--json", "--next", "3").stdout)


def test_schedules_list_shows_last_and_next_runs(tmp_path: Path, app_name: str) -> None:
    script = tmp_path / "scheduled.py"
    script.write_text(textwrap.dedent(f"""
        import apothic

        app = apothic.App("{app_name}")

        @app.function(schedule=apothic.Period(seconds=2))
        def heartbeat() -> str:
            print("beat")
            return "ok"

        @app.function(schedule=apothic.Cron("0 9 * * MON-FRI", timezone="Europe/London", overlap="buffer_one"))
        def morning() -> str:
            return "good morning"
    """))
    try:
        assert f"{app_name}: deployed version 1 (heartbeat, morning)" in apothic("deploy", str(script)).stdout
        wait_until(lambda: len(listed(app_name)) == 2 and listed(app_name)[0]["last_job_id"], timeout=90,
                   what="both schedules listed, heartbeat with a run")
        beat, morning = listed(app_name)
        assert beat["function"] == "heartbeat" and beat["spec"] == "every 2s" and not beat["paused"]
        assert beat["last_job_id"].startswith(f"job-sched-{app_name}.heartbeat-") and len(beat["next_runs"]) == 3
        assert morning["spec"] == "cron '0 9 * * MON-FRI' Europe/London, overlap=buffer_one"
        assert morning["last_job_id"] == "" and morning["last_run"] == "-"
        # Next runs in the schedule's own time zone: 09:00 London time, GMT or BST.
        assert all(t[11:16] == "09:00" and t[19:] in ("+00:00", "+01:00") for t in morning["next_runs"])

        table = apothic("schedules", "list", "--app", app_name, "--next", "2").stdout.splitlines()
        assert table[0].split()[:5] == ["SCHEDULE", "SPEC", "STATE", "LAST", "RUN"]
        rows = {line.split()[0]: line for line in table[1:] if line and not line.startswith(" ")}
        assert set(rows) == {f"{app_name}.heartbeat", f"{app_name}.morning"}
        assert "active" in rows[f"{app_name}.morning"] and "09:00:00" in rows[f"{app_name}.morning"]
        assert any(line.strip().startswith("last job job-sched-") for line in table)
        assert sum(line.strip().startswith("then ") for line in table) == 2

        # Scheduled runs are ordinary jobs.
        jobs = json.loads(apothic("jobs", "list", "--app", app_name, "--json").stdout)
        assert any(j["job_id"].startswith(f"job-sched-{app_name}.heartbeat-") for j in jobs)

        assert apothic("schedules", "pause", app_name, "morning").stdout.strip() == f"{app_name}.morning: paused"
        assert [s["paused"] for s in listed(app_name)] == [False, True]
        apothic("schedules", "resume", app_name, "morning")
        assert apothic("schedules", "trigger", app_name, "morning").stdout.strip() == f"{app_name}.morning: triggered"
        wait_until(lambda: listed(app_name)[1]["last_job_id"], timeout=60, what="the triggered run")
        job_id = listed(app_name)[1]["last_job_id"]
        wait_until(lambda: apothic("jobs", "status", job_id).stdout.splitlines()[0].strip() == "completed", timeout=90,
                   what="the triggered job to complete")

        missing = apothic("schedules", "pause", app_name, "nothing", check=False)
        assert missing.returncode == 1 and "has no schedule" in missing.stderr
        bad = apothic("schedules", "backfill", app_name, "morning", "--start", "yesterday", "--end", "today",
                      check=False)
        assert bad.returncode == 1 and "ISO 8601" in bad.stderr
    finally:
        out = apothic("schedules", "delete", app_name).stdout
    assert f"apothic-schedule:{app_name}:heartbeat" in out
    wait_until(lambda: listed(app_name) == [], what="the schedules to be gone")
