"""`apothic jobs list|watch|logs` run as a user runs them, against the test server: the
filters of `list`, and `watch` and `logs --follow` printing a running job's events and output
as they happen, until it ends."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from apothic import RemoteFunction
from apothic._cli._jobs import jobs_query, list_jobs
from apothic._control._loop import run_blocking

from ..conftest import ROOT, ctrl_c_reaches, wait_until
from .cli import apothic

pytestmark = pytest.mark.usefixtures("control_worker")

# How long a follower may take to show what a running job printed (a cold container first).
FIRST_LINE_S = 120


class Follower:
    """``apothic ARGS`` running in the background, its stdout read line by line as it comes."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "apothic", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ), cwd=str(ROOT), preexec_fn=ctrl_c_reaches,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, text: str, timeout: float = FIRST_LINE_S) -> str:
        """The first line (from here on) that contains ``text``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r} within {timeout} s; so far: {self.lines}") from None
            if line is None:
                raise AssertionError(f"ended before a line with {text!r}: {self.lines}\n{self.stderr()}")
            self.lines.append(line)
            if text in line:
                return line

    def finish(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout)
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return code

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def followers() -> list[Follower]:
    started: list[Follower] = []
    yield started
    for f in started:
        f.kill()


def deploy(tmp_path: Path, app: str, body: str) -> None:
    script = tmp_path / f"{app.replace('-', '_')}.py"
    script.write_text(f"import os\nimport time\nimport apothic\n\napp = apothic.App({app!r})\n" + textwrap.dedent(body))
    apothic("deploy", str(script))


def listed(*args: str) -> list[dict]:
    return json.loads(apothic("jobs", "list", *args, "--json").stdout)


@pytest.mark.parametrize("cmd", [["jobs", "watch"], ["jobs", "logs"], ["jobs", "list"]])
def test_jobs_commands_have_help(cmd: list[str]) -> None:
    out = apothic(*cmd, "--help").stdout
    assert out.startswith(f"usage: apothic {' '.join(cmd)}")


@pytest.mark.parametrize(("args", "words"), [
    (["list", "--status", "bogus"], ["'bogus'", "queued, running, completed, failed, cancelled, terminated, timed_out"]),
    (["list", "--status", "failed,Nope"], ["'nope'", "allowed:"]),
    (["list", "--since", "10x"], ["'10x'", "30s, 10m, 2h, 1d", "ISO 8601"]),
    (["list", "--since", "2999-01-01"], ["'2999-01-01' is in the future"]),
    (["list", "--limit", "0"], ["'0'", ">= 1"]),
    (["list", "--limit", "many"], ["'many'", ">= 1"]),
    (["list", "--app", "it's"], ["\"it's\" is not an app name", "letters, digits"]),
    (["list", "--function", "a b"], ["'a b' is not a function name"]),
    (["watch", "job-x", "--types", "log,nope"], ["'nope'", "queued, placement"]),
    (["watch", "job-x", "--after", "-1"], ["'-1'", ">= 0"]),
])
def test_bad_values_are_refused_with_what_is_allowed(args: list[str], words: list[str]) -> None:
    proc = apothic("jobs", *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert all(w in proc.stderr for w in words), proc.stderr
    assert "Fix:" in proc.stderr and "Traceback" not in proc.stderr


def test_list_filters_by_app_function_status_since_and_limit(tmp_path: Path, app_name: str) -> None:
    other = f"{app_name}-b"
    gate = tmp_path / "open"
    fn = f"double_{app_name[-6:]}"  # no other test's function has this name
    body = f"""
        @app.function()
        def {fn}(x: int) -> int:
            return 2 * x

        @app.function()
        def boom() -> None:
            raise ValueError("boom")

        @app.function(timeout_s=300)
        def hold(path: str) -> str:
            print("holding", flush=True)
            while not os.path.exists(path):
                time.sleep(0.1)
            return "released"
    """
    deploy(tmp_path, app_name, body)
    deploy(tmp_path, other, body)
    double, boom, hold = (RemoteFunction.from_name(app_name, n) for n in (fn, "boom", "hold"))
    first = double.spawn(1)
    assert first.wait() == 2
    time.sleep(0.05)
    middle = datetime.now(UTC)
    later = [double.spawn(2), *double.spawn_map([5, 6])]
    assert [j.wait() for j in later] == [4, 10, 12]
    assert double.map([7, 8]) == [14, 16]  # a map is not a job: never listed
    failed = boom.spawn()
    with pytest.raises(ValueError):
        failed.wait()
    held = hold.spawn(str(gate))
    assert RemoteFunction.from_name(other, fn).spawn(3).wait() == 6
    try:
        wait_until(lambda: str(held.status()) == "running", timeout=FIRST_LINE_S, what="the held job to run")
        mine = {first.job_id, *(j.job_id for j in later), failed.job_id, held.job_id}
        everything = listed("--app", app_name)
        assert {r["job_id"] for r in everything} == mine and all(r["job_id"].startswith("job-") for r in everything)
        assert all(r["app"] == app_name and r["function"] == f"{app_name}.{r['name']}" for r in everything)
        by_id = {r["job_id"]: r for r in everything}
        assert by_id[held.job_id]["status"] == "running" and by_id[held.job_id]["closed"] == ""
        assert by_id[failed.job_id]["status"] == "failed" and by_id[first.job_id]["duration_s"] > 0

        doubles = {first.job_id, *(j.job_id for j in later)}
        assert {r["job_id"] for r in listed("--app", app_name, "--function", fn)} == doubles
        assert {r["job_id"] for r in listed("--function", f"{app_name}.{fn}")} == doubles  # app.fn
        assert {r["job_id"] for r in listed("--app", app_name, "--function", f"{app_name}.{fn}")} == doubles
        both_apps = listed("--function", fn)
        assert {r["app"] for r in both_apps} == {app_name, other} and len(both_apps) == 5

        assert [r["job_id"] for r in listed("--app", app_name, "--status", "failed")] == [failed.job_id]
        assert [r["job_id"] for r in listed("--app", app_name, "--status", "running")] == [held.job_id]
        assert listed("--app", app_name, "--status", "queued") == []
        assert {r["job_id"] for r in listed("--app", app_name, "--status", "failed", "--status", "running")} == {
            failed.job_id, held.job_id}
        assert {r["job_id"] for r in listed("--app", app_name, "--status", "completed,failed")} == mine - {held.job_id}
        assert listed("--app", app_name, "--status", "cancelled,terminated,timed_out") == []

        since = {r["job_id"] for r in listed("--app", app_name, "--since", middle.isoformat())}
        assert since == mine - {first.job_id}
        local = middle.astimezone().replace(tzinfo=None).isoformat()  # no offset: this machine's time zone
        assert {r["job_id"] for r in listed("--app", app_name, "--since", local)} == since
        assert {r["job_id"] for r in listed("--app", app_name, "--since", "1h")} == mine

        two = listed("--app", app_name, "--limit", "2")
        assert len(two) == 2 and two[0]["job_id"] == held.job_id  # open jobs first
        assert len(listed("--app", app_name, "--status", "completed", "--limit", "3")) == 3

        table = apothic("jobs", "list", "--app", app_name, "--status", "failed,running").stdout.splitlines()
        assert table[0].split() == ["JOB", "FUNCTION", "STATUS", "STARTED", "CLOSED", "DURATION"]
        rows = {line.split()[0]: line.split() for line in table[1:]}
        assert rows[failed.job_id][1:3] == [f"{app_name}.boom", "failed"]
        held_row = rows[held.job_id]  # JOB FUNCTION STATUS STARTED - 12.3s so far
        assert held_row[1:3] == [f"{app_name}.hold", "running"] and held_row[4] == "-" and held_row[-2:] == ["so", "far"]
    finally:
        gate.touch()
    assert held.wait() == "released"

    # A value with quotes stays one value: it matches nothing and changes nothing in the query.
    sneaky = f"{app_name}' OR WorkflowType != 'x"
    assert "\\'" in jobs_query(app=sneaky) and run_blocking(list_jobs(sneaky, 50)) == []
    assert run_blocking(list_jobs(app_name, 50, function="x') OR (ApothicApp != 'y")) == []

    # The map's id is refused as a job's, not misread.
    from apothic._control._client import get_client

    async def map_ids() -> list[str]:
        client = await get_client()
        return [wf.id async for wf in client.list_workflows(f"WorkflowType = 'MapWorkflow' AND ApothicApp = '{app_name}'")]

    wait_until(lambda: run_blocking(map_ids()), timeout=30, what="the map listed")
    map_id = run_blocking(map_ids())[0]
    for cmd in (["status", map_id], ["watch", map_id], ["logs", map_id], ["logs", "-f", map_id], ["cancel", map_id]):
        proc = apothic("jobs", *cmd, check=False)
        assert proc.returncode == 1 and f"'{map_id}' is a map" in proc.stderr and "not a job" in proc.stderr, proc.stderr


def test_watch_and_logs_follow_a_running_job_as_it_prints(
    tmp_path: Path, app_name: str, followers: list[Follower]
) -> None:
    gate = tmp_path / "go"
    deploy(tmp_path, app_name, """
        @app.function(timeout_s=300)
        def hold(path: str) -> str:
            print("waiting for the gate", flush=True)
            while not os.path.exists(path):
                time.sleep(0.1)
            print("through the gate")
            return "released"
    """)
    job = RemoteFunction.from_name(app_name, "hold").spawn(str(gate))
    watch = Follower("jobs", "watch", job.job_id)
    as_json = Follower("jobs", "watch", job.job_id, "--json")
    logs = Follower("jobs", "logs", "-f", job.job_id)
    only_logs = Follower("jobs", "watch", job.job_id, "--types", "log")
    followers += [watch, as_json, logs, only_logs]

    # What the function printed arrives while it still waits (the gate is not there yet).
    line = watch.until("waiting for the gate")
    assert line.split()[1] == "log" and line.endswith("  waiting for the gate")
    assert [ln.split()[1] for ln in watch.lines[:1]] == ["queued"] and any(" started " in ln for ln in watch.lines)
    assert any(" placement " in ln for ln in watch.lines) or any(" container " in ln for ln in watch.lines)
    assert logs.until("waiting for the gate") == "waiting for the gate"
    assert json.loads(as_json.until("waiting for the gate"))["event"] == "log"
    only_logs.until("waiting for the gate")
    assert not gate.exists()
    assert all(f.proc.poll() is None for f in followers)  # each still follows

    gate.touch()
    assert watch.finish() == 0, watch.stderr()
    assert watch.lines[-2].endswith("log          through the gate")
    completed = watch.lines[-1].split()
    assert completed[1:3] == ["completed", "attempt"] and "result: 'released'" in watch.lines[-1]

    assert as_json.finish() == 0
    events = [json.loads(line) for line in as_json.lines]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert events[0]["event"] == "queued" and events[-1]["event"] == "completed"
    assert events[0]["data"]["function"] == "hold" and all(e["job_id"] == job.job_id for e in events)
    assert ["waiting for the gate", "through the gate"] == [x for e in events if e["event"] == "log"
                                                            for x in e["data"]["lines"]]

    assert logs.finish() == 0 and logs.lines == ["waiting for the gate", "through the gate"]
    assert only_logs.finish() == 0 and {ln.split()[1] for ln in only_logs.lines} == {"log"}

    # -f on a finished job: its output, then the exit code; --from now: its last event alone.
    assert apothic("jobs", "logs", "-f", job.job_id).stdout == "waiting for the gate\nthrough the gate\n"
    last = apothic("jobs", "watch", job.job_id, "--from", "now").stdout.splitlines()
    assert len(last) == 1 and last[0].split()[1] == "completed"
    seq = json.loads(apothic("jobs", "watch", job.job_id, "--json").stdout.splitlines()[-2])["seq"]
    after = [json.loads(x) for x in apothic("jobs", "watch", job.job_id, "--json", "--after", str(seq)).stdout.splitlines()]
    assert [e["event"] for e in after] == ["completed"] and after[0]["seq"] == seq + 1


def test_following_a_job_that_fails_retries_or_is_interrupted(
    tmp_path: Path, app_name: str, followers: list[Follower]
) -> None:
    gate, marker = tmp_path / "go", tmp_path / "tried"
    deploy(tmp_path, app_name, """
        @app.function(timeout_s=300, retries=apothic.Retries(max_retries=1, initial_delay=0.5))
        def flaky(marker: str, gate: str) -> None:
            print("trying", flush=True)
            if not os.path.exists(marker):
                open(marker, "w").close()
                raise RuntimeError("first try fails")
            while not os.path.exists(gate):
                time.sleep(0.1)
            raise ValueError("boom")
    """)
    job = RemoteFunction.from_name(app_name, "flaky").spawn(str(marker), str(gate))
    watch = Follower("jobs", "watch", job.job_id)
    logs = Follower("jobs", "logs", "--follow", job.job_id)
    interrupted = Follower("jobs", "watch", job.job_id)
    followers += [watch, logs, interrupted]

    retry = watch.until(" retry ")
    assert "attempt 1 failed (RuntimeError: first try fails); retrying in 0.5 s" in retry
    assert logs.until("---") == "--- attempt 1 failed (RuntimeError: first try fails); retrying in 0.5 s ---"
    assert logs.until("trying") == "trying" and logs.lines == ["trying", logs.lines[1], "trying"]

    # Ctrl-C: quiet, exit code 130, the job goes on.
    interrupted.until(" retry ")
    interrupted.proc.send_signal(signal.SIGINT)
    assert interrupted.finish(30) == 130
    err = interrupted.stderr()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert str(job.status()) == "running"

    gate.touch()
    assert watch.finish() == 1
    assert watch.lines[-1].split()[1:] == ["failed", "ValueError:", "boom"]
    assert logs.finish() == 1
    assert logs.stderr().strip().endswith(f"apothic: job {job.job_id} failed: ValueError: boom")

    # The finished job with -f: every attempt's output as `jobs logs` prints it, exit code 1.
    done = apothic("jobs", "logs", "-f", job.job_id, check=False)
    assert done.returncode == 1 and done.stdout == apothic("jobs", "logs", job.job_id).stdout
    assert "--- attempt 1 (failed: RuntimeError: first try fails) ---" in done.stdout
