"""The first minutes of a new user, on the embedded default: the quickstart, the commands it
prints, `apothic run --help`'s example, `apothic stop`, and output read through a pipe."""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from apothic.placement.providers.process import containers_in

from apothic._control._embedded import port_open, wait_for_port

from ..conftest import ROOT, free_port

APOTHIC = Path(sys.executable).parent / "apothic"  # the console script beside this interpreter


class Embedded:
    """An isolated embedded default: its own temporal-dev.yaml (free ports), its own APOTHIC_HOME."""

    def __init__(self, tmp_path: Path) -> None:
        config = yaml.safe_load((ROOT / "temporal-dev.yaml").read_text())
        config["server"].update(port=free_port(), ui_port=free_port(), codec_port=free_port())
        self.port, self.ui_port = config["server"]["port"], config["server"]["ui_port"]
        # The file's order (process before docker) is the order of preference among equal offers.
        (tmp_path / "temporal-dev.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.home = tmp_path / "home"
        # As a new user's shell: no Apothic settings, Python's default buffering (block-buffered
        # stdout on a pipe), the virtual environment not activated.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("APOTHIC_") and k != "PYTHONUNBUFFERED"}
        self.env["PATH"] = os.pathsep.join(
            p for p in self.env.get("PATH", "").split(os.pathsep) if Path(p) != APOTHIC.parent
        )
        self.env.update(APOTHIC_CONFIG=str(tmp_path / "temporal-dev.yaml"), APOTHIC_HOME=str(self.home))

    def pid_files(self) -> list[str]:
        return sorted(p.name for p in (self.home / "run").glob("*.pid"))

    def containers(self) -> dict[str, list[int]]:
        """The function container processes of this APOTHIC_HOME."""
        return containers_in(self.home / "logs" / "containers")

    def stop(self) -> subprocess.CompletedProcess:
        return subprocess.run([str(APOTHIC), "stop"], check=False, cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=120)

    def assert_all_stopped(self) -> None:
        assert not self.containers(), "function containers still run after `apothic stop`"
        assert self.pid_files() == [], "pid files left after `apothic stop`"
        assert not port_open("127.0.0.1", self.port), "the dev server still listens after `apothic stop`"


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Embedded]:
    e = Embedded(tmp_path)
    try:
        yield e
    finally:
        e.stop()  # whatever a failed test left running


class Lines:
    """A process's output, read line by line as it comes, each line with its arrival time."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: queue.Queue[tuple[str, float] | None] = queue.Queue()
        self.ended_at = 0.0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put((line.rstrip("\n"), time.monotonic()))
        self.ended_at = time.monotonic()
        self.lines.put(None)

    def next(self, timeout: float = 120) -> tuple[str, float]:
        item = self.lines.get(timeout=timeout)
        assert item is not None, "the output ended"
        return item

    def rest(self, timeout: float = 300) -> list[str]:
        """The remaining lines, once the output has ended."""
        out = []
        deadline = time.monotonic() + timeout
        while (item := self.lines.get(timeout=max(0.1, deadline - time.monotonic()))) is not None:
            out.append(item[0])
        return out


def piped(cmd: list[str], cwd: Path, env: dict[str, str]) -> Lines:
    return Lines(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, bufsize=1))


def hints(output: list[str]) -> list[tuple[str, str]]:
    """(what, command or address) for each line under the quickstart's closing `Next:`."""
    block = output[output.index("Next:") + 1:]
    return [tuple(part.strip() for part in line.split(":  ", 1)) for line in block if ":  " in line]


@pytest.mark.parametrize("where", ["repo root", "another folder"])
def test_quickstart_hints_run_as_printed(embedded: Embedded, tmp_path: Path, where: str) -> None:
    cwd = ROOT if where == "repo root" else tmp_path / "elsewhere"
    cwd.mkdir(exist_ok=True)
    out = piped([sys.executable, str(ROOT / "examples" / "quickstart.py")], cwd, embedded.env)
    first, first_at = out.next()
    assert first == "deployed quickstart version 1: slow_square, summarize"
    output = [first, *out.rest()]
    assert out.proc.wait(30) == 0, "\n".join(output)
    # After its first line the example still starts a container and waits for a 1 s call.
    assert out.ended_at - first_at > 1.0, "the first line reached the pipe only when the example ended"
    assert "remote(): Apothic runs Python functions as durable..." in output
    assert "  wait(): 144, now completed" in output
    job_id = re.search(r"spawn\(\): job (job-[0-9a-f]+)", "\n".join(output)).group(1)

    cli = ".venv/bin/apothic" if where == "repo root" else shlex.quote(str(APOTHIC))
    assert hints(output) == [
        ("the jobs of this run", f"{cli} jobs list --app quickstart"),
        ("what slow_square printed", f"{cli} jobs logs {job_id}"),
        ("every job's history (Web UI)", f"http://127.0.0.1:{embedded.ui_port}/namespaces/default/workflows"),
        ("stop the background server, worker and containers", f"{cli} stop"),
    ]
    assert embedded.containers(), "no function container ran"
    results = {}
    for what, command in hints(output):
        if command.startswith("http://"):
            with urllib.request.urlopen(command, timeout=30) as page:
                assert page.status == 200 and "<html" in page.read(2000).decode().lower()
            continue
        run = subprocess.run(command, shell=True, check=False, cwd=cwd, env=embedded.env, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0, f"{command}\n{run.stdout}\n{run.stderr}"
        results[what] = run.stdout
    assert results["the jobs of this run"].count("completed") == 3, results["the jobs of this run"]
    assert results["what slow_square printed"] == "squaring 12\n"
    stopped = results["stop the background server, worker and containers"].splitlines()
    assert [line.split()[1] for line in stopped] == ["container", "container", "worker", "codec", "server"], stopped
    embedded.assert_all_stopped()


def run_help_example() -> list[str]:
    """The example printed by `apothic run --help`, as a command line."""
    help_text = subprocess.run([str(APOTHIC), "run", "--help"], capture_output=True, text=True, check=True).stdout
    examples = [line.strip() for line in help_text.splitlines() if line.strip().startswith("apothic run ")]
    assert len(examples) == 1, help_text
    return shlex.split(examples[0])


def test_run_help_example_starts_after_a_crash_and_stop_ends_it_all(embedded: Embedded) -> None:
    # A crash left pid files: one of a process that is gone, one whose pid now runs another program.
    gone = subprocess.Popen(["true"])
    gone.wait()
    other = subprocess.Popen(["sleep", "300"])
    run_dir = embedded.home / "run"
    run_dir.mkdir(parents=True)
    (run_dir / f"server-{gone.pid}.pid").write_text(str(gone.pid))
    (run_dir / f"worker-{other.pid}.pid").write_text(str(other.pid))
    embedded.env["APOTHIC_STARTUP_TIMEOUT_S"] = "60"  # a worker that never starts fails the call in 60 s
    embedded.env["APOTHIC_CONTAINER_IDLE_S"] = "300"  # the container is still up for `apothic stop`
    try:
        argv = run_help_example()
        assert argv == ["apothic", "run", "examples/quickstart.py::slow_square", "7"]
        out = piped([str(APOTHIC), *argv[1:]], ROOT, embedded.env)  # `apothic run ... 2>&1 | cat`
        first, first_at = out.next()
        assert first == "quickstart: version 1 deployed for this run (slow_square, summarize); removed when it ends"
        output = [first, *out.rest()]
        assert out.proc.wait(30) == 0, "\n".join(output)
        # After its first line the command still waits for a container and a 1 s call.
        assert out.ended_at - first_at > 1.0, "the first line reached the pipe only when the command ended"
        assert output[-3:] == ["squaring 7", "49", "quickstart: stopped; its schedules, fleets and containers are gone"]
        files = embedded.pid_files()
        assert [name.split("-")[0] for name in files] == ["codec", "server", "worker"], files
        assert f"server-{gone.pid}.pid" not in files and f"worker-{other.pid}.pid" not in files, files
        assert embedded.containers() == {}, "the run's container outlived the run"  # an ephemeral run removes it

        stopped = embedded.stop()
        assert stopped.returncode == 0, stopped.stderr
        assert not [line for line in stopped.stdout.splitlines() if line.startswith("stopped container")], stopped.stdout
        embedded.assert_all_stopped()
        assert other.poll() is None, "`apothic stop` killed a process that only reused a stale pid"
        again = embedded.stop()
        assert again.stdout == f"nothing was running for {embedded.home}\n"
    finally:
        other.kill()
        other.wait()


def docker_containers_of(address: str, *, remove: bool = False) -> list[str]:
    """Names of the running Docker containers of the docker provider connected to ``address``
    (with ``remove``: remove all of them, stopped ones too)."""
    import docker

    client = docker.from_env(timeout=30)
    try:
        found = [ct for ct in client.containers.list(all=remove, filters={"label": "apothic.provider=docker"})
                 if f"APOTHIC_TEMPORAL_ADDRESS={address}" in (ct.attrs["Config"]["Env"] or [])]
        for ct in found if remove else ():
            ct.remove(force=True, v=True)
        return [ct.name for ct in found]
    finally:
        client.close()


def test_stop_ends_the_docker_containers_of_this_control_plane(embedded: Embedded) -> None:
    embedded.env.update(APOTHIC_PROVIDERS="docker", APOTHIC_CONTAINER_IDLE_S="300")
    address = f"127.0.0.1:{embedded.port}"
    try:
        # Deployed first: a run on a deployed app leaves it (and its container) running.
        subprocess.run([str(APOTHIC), "deploy", "examples/quickstart.py"], check=True, cwd=ROOT, env=embedded.env,
                       capture_output=True, timeout=300)
        run = subprocess.run([str(APOTHIC), "run", "examples/quickstart.py::slow_square", "5"], check=False, cwd=ROOT,
                             env=embedded.env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0 and run.stdout == "25\n", run.stdout + run.stderr
        (name,) = docker_containers_of(address)
        assert not embedded.containers(), "placed as a process, not in Docker"

        stopped = embedded.stop()
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.splitlines()[0] == f"stopped docker container {name}", stopped.stdout
        assert docker_containers_of(address) == []
        embedded.assert_all_stopped()
    finally:
        # Stopped containers wait for their control plane to release them: this one is gone.
        embedded.stop()
        docker_containers_of(address, remove=True)


@pytest.mark.parametrize("command", ["dev", "server"])
def test_dev_and_server_output_arrives_line_by_line(embedded: Embedded, command: str) -> None:
    out = piped([str(APOTHIC), command], ROOT, embedded.env)  # `apothic dev | cat`
    try:
        # Their own line (and the worker's, for dev) while they run: they run until stopped.
        expected = {
            "dev": (f"apothic dev: Temporal at 127.0.0.1:{embedded.port}", "control worker for "),
            "server": (f"Temporal dev server on 127.0.0.1:{embedded.port}",),
        }[command]
        seen: list[str] = []
        while not all(any(line.startswith(e) for line in seen) for e in expected):
            seen.append(out.next(timeout=120)[0])
        assert out.proc.poll() is None
        wait_for_port("127.0.0.1", embedded.port)  # `apothic server` prints its line before it starts
    finally:
        out.proc.send_signal(signal.SIGTERM)
        out.proc.wait(60)
    assert embedded.stop().returncode == 0
    embedded.assert_all_stopped()
