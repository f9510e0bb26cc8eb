"""The apothic command line, run as a user runs it, against the test server."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from .cli import apothic

pytestmark = pytest.mark.usefixtures("control_worker")


@pytest.mark.parametrize("cmd", [[], ["server"], ["worker"], ["dev"], ["deploy"], ["run"], ["jobs"],
                                 ["jobs", "list"], ["jobs", "status"], ["jobs", "logs"], ["jobs", "cancel"], ["stop"]])
def test_every_command_has_help(cmd: list[str]) -> None:
    out = apothic(*cmd, "--help").stdout
    assert out.startswith("usage: apothic")
    assert len(out.splitlines()) > 3


def test_deploy_run_and_jobs(tmp_path: Path, app_name: str) -> None:
    # A helper module beside the script: the container gets it by value, not from disk.
    (tmp_path / f"helpers_{app_name.replace('-', '_')}.py").write_text("def power(x):\n    return x ** 3\n")
    script = tmp_path / "tool.py"
    script.write_text(textwrap.dedent(f"""
        import time
        import apothic
        from helpers_{app_name.replace('-', '_')} import power

        app = apothic.App("{app_name}")

        @app.function()
        def cube(x: int) -> int:
            print("cubing", x)
            return power(x)

        @app.function()
        def wait_forever() -> None:
            time.sleep(600)
    """))
    out = apothic("deploy", str(script)).stdout
    assert f"{app_name}: deployed version 1 (cube, wait_forever)" in out
    assert "unchanged, still version 1" in apothic("deploy", str(script)).stdout

    run = apothic("run", f"{script}::cube", "3")
    assert run.stdout.strip() == "27"
    assert "cubing 3" in run.stderr

    listed = json.loads(apothic("jobs", "list", "--app", app_name, "--json").stdout)
    assert len(listed) == 1 and listed[0]["function"] == f"{app_name}.cube" and listed[0]["status"] == "completed"
    job_id = listed[0]["job_id"]
    status = apothic("jobs", "status", job_id).stdout.splitlines()
    assert status[0] == "completed" and "provider  process" in status  # then where it ran
    assert "cubing 3" in apothic("jobs", "logs", job_id).stdout

    detached = apothic("run", "--detach", f"{script}::wait_forever").stdout.strip()
    assert detached.startswith("job-")
    cancelled = apothic("jobs", "cancel", detached).stdout
    assert cancelled.strip() == f"{detached}: cancelled"

    missing = apothic("jobs", "status", "job-nope", check=False)
    assert missing.returncode == 1 and "no job 'job-nope'" in missing.stderr
    bad = apothic("run", f"{script}::nothing", check=False)
    assert bad.returncode == 1 and "has no local entrypoint or app function 'nothing'" in bad.stderr


def test_a_failing_function_is_one_error_line_and_its_traceback_with_debug(tmp_path: Path, app_name: str) -> None:
    script = tmp_path / "failing.py"
    script.write_text(textwrap.dedent(f"""
        import apothic

        app = apothic.App("{app_name}")

        @app.function()
        def divide(x: int) -> float:
            return 1 / x
    """))
    plain = apothic("run", f"{script}::divide", "0", check=False)
    assert plain.returncode == 1 and plain.stdout == ""
    # After the command's own progress lines: the error in one line, then the hint.
    *_, line, hint = plain.stderr.splitlines()
    assert line == "apothic: error: ZeroDivisionError: division by zero", plain.stderr
    assert hint == "apothic: rerun with --debug (or APOTHIC_DEBUG=1) for the remote traceback"
    assert "Traceback" not in plain.stderr

    debug = apothic("run", f"{script}::divide", "0", "--debug", check=False)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr and "Remote traceback (job job-" in debug.stderr
    assert "return 1 / x" in debug.stderr  # the remote frame, from the user's file
    assert debug.stderr.splitlines()[-1] == "apothic: error: ZeroDivisionError: division by zero"
