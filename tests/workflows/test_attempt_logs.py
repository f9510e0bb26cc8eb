"""``job.logs()`` and ``apothic jobs logs`` show every attempt's output, each under its attempt
number and outcome, while the job runs and after it ended; many attempts stay bounded."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from apothic import App, Retries
from apothic.workflows._attempts import LOGS_KEPT, LOGS_KEPT_FULL, LOGS_TAIL_BYTES

from ..conftest import wait_until
from ..e2e.cli import apothic

pytestmark = pytest.mark.usefixtures("control_worker")


def test_logs_of_every_attempt_while_running_and_after(app_name: str, tmp_path: Path) -> None:
    marks, release = tmp_path / "attempts", tmp_path / "release"
    app = App(app_name)

    @app.function(retries=Retries(max_retries=2, initial_delay=0.1))
    def flaky() -> int:
        with open(marks, "a") as f:
            f.write("x")
        n = len(marks.read_text())
        print(f"attempt {n} says hello", flush=True)
        if n == 1:
            raise ValueError("boom")
        if n == 2:
            while not release.exists():  # until the test has read the running attempt's output
                time.sleep(0.05)
            raise KeyError("again")
        print("third time lucky")
        return n

    app.deploy()
    job = flaky.spawn()
    running = (
        "--- attempt 1 (failed: ValueError: boom) ---\nattempt 1 says hello\n"
        "--- attempt 2 (running) ---\nattempt 2 says hello\n"
    )
    # The earlier attempt's output (kept by the workflow) and the running one's (its heartbeat).
    wait_until(lambda: job.logs() == running, timeout=60, interval=0.3, what="the running attempt's output")
    release.write_text("go")
    assert job.wait() == 3
    final = (
        "--- attempt 1 (failed: ValueError: boom) ---\nattempt 1 says hello\n"
        "--- attempt 2 (failed: KeyError: 'again') ---\nattempt 2 says hello\n"
        "--- attempt 3 (completed) ---\nattempt 3 says hello\nthird time lucky\n"
    )
    assert job.logs() == final
    assert apothic("jobs", "logs", job.job_id).stdout == final


def test_a_job_that_ran_once_shows_its_output_alone(app_name: str) -> None:
    app = App(app_name)

    @app.function()
    def once() -> None:
        print("only once")
        raise ValueError("no retries")

    app.deploy()
    job = once.spawn()
    with pytest.raises(ValueError):
        job.wait()
    assert job.logs() == "only once\n"


def test_many_attempts_keep_a_bounded_output(app_name: str, tmp_path: Path) -> None:
    marks = tmp_path / "attempts"
    attempts = LOGS_KEPT + 3
    app = App(app_name)

    @app.function(retries=Retries(max_retries=attempts - 1, initial_delay=0.01, backoff_coefficient=1.0))
    def noisy() -> None:
        with open(marks, "a") as f:
            f.write("x")
        n = len(marks.read_text())
        print(f"attempt {n} begins")
        for _ in range(80):  # 8,000 bytes
            print("." * 99)
        print(f"attempt {n} ends")
        raise RuntimeError(f"failure {n}")

    app.deploy()
    job = noisy.spawn()
    with pytest.raises(RuntimeError, match=f"failure {attempts}"):
        job.wait(timeout_s=240)
    logs = job.logs()
    not_kept = attempts - LOGS_KEPT
    assert logs.startswith(f"--- attempts 1-{not_kept} (output not kept) ---\n"), logs[:200]
    sections = logs.split("--- attempt ")[1:]  # the last LOGS_KEPT attempts, the failed last one included
    assert len(sections) == LOGS_KEPT
    for n, section in zip(range(not_kept + 1, attempts + 1), sections):
        assert section.startswith(f"{n} (failed: RuntimeError: failure {n}) ---\n"), section[:100]
        assert section.rstrip().endswith(f"attempt {n} ends")
        if n > attempts - LOGS_KEPT_FULL:  # the last ones in full
            assert f"attempt {n} begins" in section and "cut" not in section
        else:  # older ones: their tail, said so
            assert f"attempt {n} begins" not in section
            assert "earlier bytes of this attempt's output cut ...]" in section
            assert len(section.encode()) < LOGS_TAIL_BYTES + 200
