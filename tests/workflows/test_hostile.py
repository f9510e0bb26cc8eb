"""Hostile functions against real processes (the process provider): native code that holds
the interpreter's lock past its timeout, processes that die running an input, and the
temporary files a container leaves. The container's supervisor
(``apothic/runtime/_supervisor.py``) is what deals with each."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

import apothic
from apothic import App, JobStatus
from apothic.runtime._supervisor import KILL_GRACE_S, SILENT_KILL_S

from ..conftest import container_pids, job_info, wait_until

pytestmark = pytest.mark.usefixtures("control_worker")


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] in "ZX"
    except (OSError, IndexError):
        return True


def wait_for_the_supervisor() -> None:
    """In a container: wait until its supervisor holds a TCP connection, to the Temporal server
    (it connects once a runtime serves; a crash before then is reported once it has, which a
    busy machine can delay past the server's heartbeat timeout: then one infrastructure retry)."""
    supervisor = os.getppid()
    while True:
        sockets = set()
        for fd in os.listdir(f"/proc/{supervisor}/fd"):
            try:
                link = os.readlink(f"/proc/{supervisor}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                sockets.add(link[len("socket:["):-1])
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                rows = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            if any(row.split()[3] == "01" and row.split()[9] in sockets for row in rows):  # ESTABLISHED
                return
        time.sleep(0.1)


def native_sleep(seconds: int) -> None:
    """libc's sleep() through ctypes.PyDLL, which keeps the interpreter's lock while the C
    function runs: no other thread of the process runs Python meanwhile (no heartbeat, no
    interruption)."""
    import ctypes

    ctypes.PyDLL(None).sleep(seconds)


def test_a_native_hang_holding_the_gil_times_out_on_time_and_frees_the_slot(temporal: str, app_name: str,
                                                                          tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    app = App(app_name)

    @app.function(timeout_s=3, max_containers=1)
    def work(mode: str) -> tuple[str, int]:
        with open(pids, "a") as f:
            f.write(f"{os.getpid()}\n")
        print(f"starting {mode}", flush=True)
        if mode == "hang":
            native_sleep(3600)
        return os.environ["APOTHIC_CONTAINER_ID"], os.getpid()

    app.deploy()
    container, first = work.remote("ok")
    job = work.spawn("hang")
    began = time.monotonic()
    with pytest.raises(apothic.FunctionTimeoutError, match="timeout_s=3") as err:
        job.wait(timeout_s=120)
    took = time.monotonic() - began
    # The runtime cannot even try to interrupt it: the supervisor kills it SILENT_KILL_S past the
    # timeout (KILL_GRACE_S at the latest) and reports the timeout at once.
    assert took < 3 + KILL_GRACE_S + 6, took
    assert "did not return to Python" in str(err.value)
    assert int(lines(pids)[-1]) == first  # the warm process hung, and is gone
    assert gone(first)
    assert "starting hang" in job.logs()
    assert [(a.kind, a.retried) for a in job_info(temporal, job.job_id).attempts] == [("user", False)]
    # Its slot is free again: the next input runs in the same container, in a fresh process.
    again = work.remote("ok", timeout_s=60)
    assert again[0] == container and again[1] != first


@pytest.mark.parametrize(
    "how, named",
    [("exit", "exited with code 1"), ("segv", "SIGSEGV"), ("kill", "SIGKILL")],
)
def test_a_process_that_dies_running_an_input_fails_it_and_follows_retries(
    temporal: str, app_name: str, tmp_path: Path, how: str, named: str
) -> None:
    runs = {"once": tmp_path / "once", "twice": tmp_path / "twice"}
    app = App(app_name)

    def crash(name: str, mode: str) -> int:
        if mode == "ready":
            wait_for_the_supervisor()
            return os.getpid()
        with open(runs[name], "a") as f:
            f.write(f"{os.getpid()}\n")
        print(f"about to crash: {mode}", flush=True)
        if mode == "exit":
            os._exit(1)
        elif mode == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        return os.getpid()

    @app.function()  # retries=0
    def once(mode: str) -> int:
        return crash("once", mode)

    @app.function(retries=1)
    def twice(mode: str) -> int:
        return crash("twice", mode)

    app.deploy()
    warm = once.remote("ready")  # the container idles 4 s at most before the next input: it stays
    job = once.spawn(how)
    began = time.monotonic()
    with pytest.raises(apothic.RemoteError) as err:
        job.wait(timeout_s=120)
    took = time.monotonic() - began
    assert took < 10
    assert err.value.remote_type == "apothic.ProcessDied"
    assert named in str(err.value) and "while it ran this input" in str(err.value)
    assert "about to crash" in str(err.value)  # its output, in the message
    assert len(lines(runs["once"])) == 1  # ran once: retries=0
    assert "about to crash" in job.logs()
    if how == "segv":  # the Python stack, printed by faulthandler into the input's output
        assert "Segmentation fault" in job.logs() and "in crash" in job.logs()
    info = job_info(temporal, job.job_id)
    assert [(a.kind, a.retried) for a in info.attempts] == [("user", False)]
    assert "ProcessDied" in info.attempts[0].reason
    # The container lives on: a fresh process serves the next input.
    assert once.remote("ok", timeout_s=60) not in (warm, int(lines(runs["once"])[0]))

    twice.remote("ready")
    job = twice.spawn(how)
    with pytest.raises(apothic.RemoteError, match=named):
        job.wait(timeout_s=120)
    assert len(lines(runs["twice"])) == 2  # ran twice: retries=1
    assert [(a.kind, a.retried) for a in job_info(temporal, job.job_id).attempts] == [("user", True), ("user", False)]


def test_a_crash_or_a_native_hang_in_a_map_fails_that_input_only(app_name: str, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    app = App(app_name)

    @app.function(timeout_s=3, max_containers=1)  # retries=0
    def item(mode: str) -> str:
        if mode == "ready":
            wait_for_the_supervisor()
            return mode
        with open(ran, "a") as f:
            f.write(f"{mode}\n")
        print(f"item {mode}", flush=True)
        if mode == "crash":
            os._exit(7)
        if mode == "hang":
            native_sleep(3600)
        return mode.upper()

    app.deploy()
    assert item.remote("ready") == "ready"
    out = item.map(["a", "b", "crash", "c", "hang", "d"], return_exceptions=True)
    assert [out[0], out[1], out[3], out[5]] == ["A", "B", "C", "D"]
    assert isinstance(out[2], apothic.RemoteError) and out[2].remote_type == "apothic.ProcessDied", out[2]
    assert "exited with code 7" in str(out[2]) and "item crash" in str(out[2])
    assert isinstance(out[4], apothic.FunctionTimeoutError) and "did not return to Python" in str(out[4]), out[4]
    # The crashed and the hung input ran once (retries=0); the others were not charged for them:
    # each ran, those its batch had finished since its last heartbeat (at most a second) again.
    assert lines(ran).count("crash") == 1 and lines(ran).count("hang") == 1, lines(ran)
    assert set(lines(ran)) == {"a", "b", "crash", "c", "hang", "d"}


def test_a_crash_fails_every_input_whose_code_ran_in_the_process(app_name: str, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    app = App(app_name)

    @app.function(max_containers=1)  # retries=0
    @apothic.concurrent(max_inputs=2)
    def work(mode: str) -> str:
        if mode == "ready":
            wait_for_the_supervisor()
            return mode
        with open(ran, "a") as f:
            f.write(f"{mode}\n")
        if mode == "crash":
            while lines(ran).count("slow") < 1:  # the other input runs too
                time.sleep(0.05)
            os._exit(1)
        time.sleep(30)
        return mode

    app.deploy()
    assert work.remote("ready") == "ready"
    crasher, bystander = work.spawn("crash"), work.spawn("slow")
    # Which input's code ended the process is not known: each whose code ran fails, by its retries.
    for job in (crasher, bystander):
        with pytest.raises(apothic.RemoteError, match=r"exited with code 1 while it ran this input \(1 other") as err:
            job.wait(timeout_s=120)
        assert err.value.remote_type == "apothic.ProcessDied"
    assert sorted(lines(ran)) == ["crash", "slow"]  # each ran once
    assert work.remote("ready") == "ready"  # a fresh process serves


def test_temporary_files_are_removed_however_the_container_ends(app_name: str) -> None:
    app = App(app_name)

    @app.function(timeout_s=60)
    def noisy(mode: str) -> tuple[str, int, int, str]:
        scratch = os.environ["APOTHIC_SCRATCH_DIR"]
        for _ in range(5 * 1024):  # 5 MB of output, captured in the scratch folder
            print("y" * 1023)
        sys.stdout.flush()
        if mode == "crash":
            os._exit(1)
        return scratch, os.getpid(), os.getppid(), os.environ["APOTHIC_CONTAINER_ID"]

    app.deploy()
    scratch, _, _, container = noisy.remote("ok")
    folder = os.path.dirname(scratch)
    assert os.path.basename(folder).startswith("apothic-container-")
    assert os.path.isdir(scratch) and os.listdir(scratch)  # the capture file lives there
    # A crash: that runtime's scratch folder goes with it, the container's stays.
    with pytest.raises(apothic.RemoteError, match="exited with code 1"):
        noisy.remote("crash")
    wait_until(lambda: not os.path.exists(scratch), timeout=10, what="the crashed runtime's scratch folder to go")
    scratch2, _, _, _ = noisy.remote("ok")
    assert os.path.dirname(scratch2) == folder
    # A drained container (idle): everything goes (the runtimes' status files too).
    wait_until(lambda: not container_pids(app_name, supervisors=True), timeout=60, what="the idle container to exit")
    assert not os.path.exists(folder)
    states = Path(os.environ["APOTHIC_HOME"]) / "logs" / "containers"
    assert (states / f"{container}.exit").read_text() == "0" and not (states / f"{container}.exit.task0").exists()

    # A supervisor killed with SIGKILL: its runtime dies with it; the next container sweeps the folder.
    scratch3, pid3, supervisor3, _ = noisy.remote("ok")
    folder3 = os.path.dirname(scratch3)
    os.kill(supervisor3, signal.SIGKILL)
    wait_until(lambda: gone(pid3), timeout=10, what="the runtime to die with its supervisor")
    assert os.path.isdir(folder3)
    wait_until(lambda: not container_pids(app_name, supervisors=True), timeout=60, what="the container to be gone")
    noisy.remote("ok", timeout_s=120)
    assert not os.path.exists(folder3)


def test_a_job_cancelled_while_its_code_holds_the_gil_is_cancelled(app_name: str, tmp_path: Path) -> None:
    started = tmp_path / "started"
    app = App(app_name)

    @app.function(timeout_s=600)
    def hang() -> None:
        started.write_text(str(os.getpid()))
        native_sleep(3600)

    app.deploy()
    job = hang.spawn()
    wait_until(lambda: started.exists(), timeout=60, what="the input to start")
    time.sleep(SILENT_KILL_S + 1)  # the supervisor heartbeats for the silent runtime by now
    began = time.monotonic()
    job.cancel(wait_s=60)
    assert job.status() is JobStatus.CANCELLED
    assert time.monotonic() - began < 20
    wait_until(lambda: gone(int(started.read_text())), timeout=20, what="the hung process to be killed")

