"""Ephemeral runs against the session's server: `with app.run()`, `apothic run`, live output,
Job.gather, current_job_id and is_local inside functions, and what a run leaves behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ..conftest import ROOT, container_pids
from .cli import apothic
from .test_examples import left_behind

pytestmark = pytest.mark.usefixtures("control_worker")


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def python(path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=dict(os.environ),
                          cwd=str(path.parent), timeout=timeout)


def test_app_run_is_live_for_the_block_then_gone(tmp_path: Path, app_name: str) -> None:
    path = script(tmp_path, "live", f"""
        import asyncio, time
        import apothic

        app = apothic.App("{app_name}")

        @app.function()
        def who(x: int) -> tuple:
            print(f"input {{x}} starts")
            time.sleep(0.5)
            print(f"input {{x}} ends")
            return apothic.current_job_id(), apothic.is_local()

        @app.function()
        def boom() -> None:
            print("about to fail")
            raise ValueError("boom")

        with app.run() as live:
            assert live is app
            jobs = [who.spawn(i) for i in range(2)]
            results = apothic.Job.gather(*jobs)
            print("job ids:", [r[0] == j.job_id for r, j in zip(results, jobs)], "local:", [r[1] for r in results])
            (mapped,) = who.map([7])
            print("map input id:", mapped[0].startswith("map-") and mapped[0].endswith("#0"))
            try:
                apothic.Job.gather(who.spawn(9), boom.spawn())
            except ValueError as e:
                print("gather raised:", e)
        try:
            who.remote(1)
        except apothic.NotFoundError as e:
            print("after the run:", str(e).split(" on ")[0])

        async def again() -> None:
            async with app.run():
                print("async run:", (await who.remote.aio(3))[1])

        asyncio.run(again())
    """)
    proc = python(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out, err = proc.stdout.splitlines(), proc.stderr.splitlines()
    assert out == ["job ids: [True, True] local: [False, False]", "map input id: True", "gather raised: boom",
                   f"after the run: app {app_name!r} is not deployed", "async run: False"], proc.stdout
    assert err[0] == f"{app_name}: version 1 deployed for this run (boom, who); removed when it ends", proc.stderr
    # Two jobs at once: each line marked with its function and job.
    marked = [line for line in err if line.startswith("[who job-") and " input " in line]
    assert len({line.split("]")[0] for line in marked if "input 0" in line or "input 1" in line}) == 2, proc.stderr
    assert any(line.endswith("] input 0 ends") for line in marked), proc.stderr
    assert "[who #0] input 7 starts" not in err and "input 7 starts" in err  # a map of one input: unmarked
    assert any(line.endswith("about to fail") for line in err), proc.stderr
    # The second run: versions go on after a removal (a new version never reuses a queue).
    assert f"{app_name}: version 2 deployed for this run (boom, who); removed when it ends" in err, proc.stderr
    assert err.count(f"{app_name}: stopped; its schedules, fleets and containers are gone") == 2, proc.stderr
    assert asyncio.run(left_behind(app_name)) == []
    assert container_pids(app_name) == []


def test_output_shows_only_when_enabled_and_maps_mark_their_inputs(tmp_path: Path, app_name: str) -> None:
    path = script(tmp_path, "enabled", f"""
        import sys
        import apothic

        app = apothic.App("{app_name}")

        @app.function()
        def shout(x: int) -> int:
            print(f"shouting {{x}}")
            print(f"to stderr {{x}}", file=sys.stderr)
            return x

        app.deploy()
        shout.remote(0)
        print("--- quiet above", file=sys.stderr, flush=True)
        with apothic.enable_output():
            shout.remote(1)
            assert shout.map([2, 3]) == [2, 3]
        print("--- off again", file=sys.stderr, flush=True)
        shout.remote(4)
        apothic.enable_output()  # on for the rest of the process
        shout.remote(6)
    """)
    proc = python(path)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.splitlines()
    assert err[:1] == ["--- quiet above"], proc.stderr
    shown = err[1:err.index("--- off again")]
    assert shown == ["shouting 1", "to stderr 1", "[shout #0] shouting 2", "[shout #0] to stderr 2",
                     "[shout #1] shouting 3", "[shout #1] to stderr 3"], proc.stderr
    assert err[err.index("--- off again") + 1:] == ["shouting 6", "to stderr 6"], proc.stderr


def test_apothic_run_on_an_app_deployed_before_leaves_it_deployed(tmp_path: Path, app_name: str) -> None:
    path = script(tmp_path, "kept", f"""
        import apothic

        app = apothic.App("{app_name}")

        @app.function()
        def triple(x: int) -> int:
            print("tripling", x)
            return 3 * x
    """)
    apothic("deploy", str(path))
    run = apothic("run", f"{path}::triple", "--x", "4")
    assert run.stdout == "12\n", run.stdout + run.stderr
    assert f"{app_name}: unchanged, version 1 (triple); the app stays deployed after the run" in run.stderr
    assert "tripling 4" in run.stderr and "stopped" not in run.stderr
    again = apothic("run", f"{path}::triple", "5")  # still deployed: the run did not remove it
    assert again.stdout == "15\n"


def test_a_bad_flag_fails_before_anything_is_deployed() -> None:
    bad = apothic("run", "examples/hello_world.py", "--n", "five", check=False)
    assert bad.returncode == 1 and bad.stdout == "", bad.stdout
    assert bad.stderr.splitlines() == [
        "apothic: error: apothic run examples/hello_world.py: --n 'five' is not an int (parameter n: int). "
        "Fix: pass a whole number, e.g. --n 5."
    ], bad.stderr
    helped = apothic("run", "examples/hello_world.py", "--help")
    assert helped.stdout.startswith("usage: apothic run examples/hello_world.py::main [--n INT] [--name STR]")
    unknown = apothic("run", "examples/hello_world.py::nothing", check=False)
    assert unknown.returncode == 1 and "has no local entrypoint or app function 'nothing'" in unknown.stderr


def test_sigterm_ends_a_run_and_removes_the_app(tmp_path: Path, app_name: str) -> None:
    path = script(tmp_path, "interrupted", f"""
        import time
        import apothic

        app = apothic.App("{app_name}")

        @app.function(timeout_s=600)
        def forever() -> None:
            print("started forever", flush=True)
            time.sleep(600)

        @app.local_entrypoint()
        def main() -> None:
            job = forever.spawn()
            print(f"spawned {{job.job_id}}", flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-m", "apothic", "run", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ), cwd=str(ROOT))
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        while not any(line.startswith("started forever") for line in lines):  # the function runs
            line = proc.stdout.readline()
            assert line, "\n".join(lines)
            lines.append(line.rstrip("\n"))
        job_id = next(line.split()[1] for line in lines if line.startswith("spawned "))
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines += rest.splitlines()
    assert proc.returncode == 130, "\n".join(lines)
    assert f"{app_name}: stopped, cancelled 1 running job(s); its schedules, fleets and containers are gone" in lines
    assert time.monotonic() - started < 60, "\n".join(lines)
    assert apothic("jobs", "status", job_id).stdout.splitlines()[0] == "cancelled"
    assert asyncio.run(left_behind(app_name)) == []
    assert container_pids(app_name) == []
