"""remote(), spawn() and Job against a real Temporal server, control worker and containers."""

from __future__ import annotations

import time

import pytest

import apothic
from apothic import App, Job, JobStatus

from ..conftest import container_pids, wait_until

pytestmark = pytest.mark.usefixtures("control_worker")


class RecordError(Exception):
    """A user exception type defined in the caller's code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, code)
        self.code = code


def test_remote_spawn_status_logs(app_name: str) -> None:
    app = App(app_name)

    @app.function(timeout_s=60)
    def shout(text: str, times: int = 1) -> str:
        print(f"shouting {text!r}")
        return (text.upper() + "!") * times

    d = app.deploy()
    assert d.version == 1 and d.created and d.functions == ("shout",)
    assert shout.remote("hi", times=2) == "HI!HI!"
    job = shout.spawn("later")
    assert isinstance(job, Job) and job.job_id.startswith("job-")
    assert job.wait() == "LATER!"
    assert job.status() is JobStatus.COMPLETED
    assert "shouting 'later'" in job.logs()
    # Calling the decorated function directly runs it here.
    assert shout("local") == "LOCAL!"


def test_user_exception_keeps_its_type_and_remote_traceback(app_name: str) -> None:
    app = App(app_name)

    @app.function()
    def fetch(record_id: str) -> dict:
        print("about to fail")
        raise RecordError(f"no record {record_id}", 404)

    app.deploy()
    with pytest.raises(RecordError) as info:
        fetch.remote("r-1")
    assert info.value.code == 404
    assert str(info.value.args[0]) == "no record r-1"
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "Remote traceback" in notes and "in fetch" in notes and "RecordError" in notes

    job = fetch.spawn("r-2")
    with pytest.raises(RecordError):
        job.wait()
    assert job.status() is JobStatus.FAILED
    assert "about to fail" in job.logs()


def test_function_timeout_is_enforced(app_name: str) -> None:
    app = App(app_name)

    @app.function(timeout_s=2)
    def sleepy() -> str:
        time.sleep(120)
        return "never"

    app.deploy()
    started = time.monotonic()
    with pytest.raises(apothic.FunctionTimeoutError, match="timeout_s=2"):
        sleepy.remote()
    assert time.monotonic() - started < 30


def test_cancel_stops_a_sleeping_function_within_seconds(app_name: str) -> None:
    app = App(app_name)

    @app.function(timeout_s=600)
    def nap(seconds: int) -> str:
        print("napping", flush=True)
        time.sleep(seconds)
        return "woke"

    app.deploy()
    job = nap.spawn(300)
    wait_until(lambda: job.status() is JobStatus.RUNNING, timeout=60, what="the job to run")
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 10
    assert job.status() is JobStatus.CANCELLED
    with pytest.raises(apothic.JobCancelledError):
        job.wait()
    job.cancel()  # twice is harmless
    # The container survived the interruption and serves the next call.
    assert nap.remote(0) == "woke"


def test_caller_timeout_cancels_the_job(app_name: str) -> None:
    app = App(app_name)

    @app.function(timeout_s=600)
    def slow() -> int:
        time.sleep(60)
        return 1

    app.deploy()
    with pytest.raises(apothic.CallTimeoutError, match="cancelled"):
        slow.remote(timeout_s=3)
    with pytest.raises(apothic.InvalidError):
        slow.remote(timeout_s=0)


def test_job_wait_timeout_leaves_job_running(app_name: str) -> None:
    app = App(app_name)

    @app.function()
    def two_seconds() -> str:
        time.sleep(2)
        return "done"

    app.deploy()
    job = two_seconds.spawn()
    with pytest.raises(apothic.CallTimeoutError):
        job.wait(timeout_s=0.2)
    assert Job.from_id(job.job_id).wait() == "done"


def test_not_deployed_and_unknown_names(app_name: str) -> None:
    with pytest.raises(apothic.NotFoundError, match="not deployed"):
        apothic.RemoteFunction.from_name(app_name, "missing").remote()
    app = App(app_name)

    @app.function()
    def present() -> int:
        return 1

    app.deploy()
    with pytest.raises(apothic.NotFoundError, match="no function 'absent'"):
        apothic.RemoteFunction.from_name(app_name, "absent").remote()
    with pytest.raises(apothic.NotFoundError):
        Job.from_id("job-does-not-exist").status()
    with pytest.raises(apothic.InvalidError):
        apothic.RemoteFunction.from_name("bad name!", "x")


def test_redeploy_new_calls_use_new_code_running_calls_finish_on_old(app_name: str) -> None:
    old = App(app_name)

    @old.function()
    def which(delay: float) -> str:
        time.sleep(delay)
        return "v1"

    assert old.deploy().version == 1
    assert old.deploy().created is False  # identical code: same version
    running = which.spawn(4)
    wait_until(lambda: running.status() is JobStatus.RUNNING, timeout=60, what="the v1 call to run")

    new = App(app_name)

    @new.function()  # noqa: F811 - the same function, changed
    def which(delay: float) -> str:  # type: ignore[no-redef]
        time.sleep(delay)
        return "v2"

    d = new.deploy()
    assert d.version == 2 and d.created
    assert apothic.RemoteFunction.from_name(app_name, "which").remote(0) == "v2"
    assert running.wait() == "v1"


def test_containers_are_released_after_the_idle_window(app_name: str) -> None:
    app = App(app_name)

    @app.function()
    def ping() -> str:
        return "pong"

    app.deploy()
    assert ping.remote() == "pong"
    assert container_pids(app_name), "a warm container should be running right after a call"
    wait_until(lambda: not container_pids(app_name), timeout=60, what="the idle container to be released")


async def test_async_twins(app_name: str) -> None:
    app = App(app_name)

    @app.function()
    async def double(x: int) -> int:
        return 2 * x

    deployed = await app.aio.deploy()
    assert deployed.version == 1
    assert await double.aio.remote(21) == 42
    remote = apothic.RemoteFunction.from_name(app_name, "double")
    job = await remote.aio.spawn(5)
    assert await job.aio.wait() == 10
    assert await job.aio.status() is JobStatus.COMPLETED
    with pytest.warns(UserWarning, match=r"\.aio\."):
        job.status()
