"""What runs inside a simulated instance: a local process group, or a local Docker container.

Both runners start the instance's command in its own session with its output in a log file,
and kill the whole process group on :meth:`kill`. Every process also carries the environment
variable ``VASTSIM_MARKER=<simulator token>:<instance id>``, so that a process that left the
group (``setsid``) is still found and killed by :func:`kill_marked`.

Limits: the ``process`` runner ignores the image (the command runs on this host, as this
user, without isolation or resource limits) and cannot mount volumes, which it exposes as
directories instead; the ``docker`` runner needs a reachable engine and an image that is
already present locally (``--pull never``: nothing is downloaded).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

MARKER_ENV = "VASTSIM_MARKER"
_KILL_GRACE_S = 1.0


def docker_available(docker: str = "docker") -> bool:
    """Whether ``docker info`` succeeds within 15 seconds."""
    if shutil.which(docker) is None:
        return False
    try:
        done = subprocess.run([docker, "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def kill_marked(marker: str) -> list[int]:
    """SIGKILL every process of this host whose environment has ``VASTSIM_MARKER`` = ``marker``.

    ``marker`` may end in ``:`` to match every instance of one simulator. Returns the pids.
    """
    killed = []
    want = f"{MARKER_ENV}={marker}".encode()
    prefix = want.endswith(b":")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(v.startswith(want) if prefix else v == want for v in environ):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except ProcessLookupError:
                pass
    return killed


def marked_pids(marker: str) -> list[int]:
    """Pids of live (not zombie) processes whose ``VASTSIM_MARKER`` starts with ``marker``."""
    found = []
    want = f"{MARKER_ENV}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and any(v.startswith(want) for v in environ):
            found.append(int(entry.name))
    return found


class ProcessRunner:
    """Runs ``argv`` as a local process in its own session (the ``process`` instance mode)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path,
              image: str, mounts: Mapping[str, Path]) -> None:
        """Start the command; output and errors go to ``log_path``.

        Raises:
            OSError: the program cannot be started.
        """
        full_env = dict(env)
        full_env[MARKER_ENV] = self.marker
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                list(argv), env=full_env, cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
            )

    def wait(self, kill_group: bool = True) -> int:
        """Block until the command exits; returns its exit code (negative: killed by a signal).

        Args:
            kill_group: also SIGKILL what the command left running in its process group, as a
                container does when its main process ends.
        """
        assert self.proc is not None
        code = self.proc.wait()
        if kill_group:
            self._killpg(signal.SIGKILL)
        return code

    def kill(self) -> None:
        """SIGTERM the process group, SIGKILL it after a short grace, and any marked straggler."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self._killpg(signal.SIGTERM)
                try:
                    self.proc.wait(_KILL_GRACE_S)
                except subprocess.TimeoutExpired:
                    pass
            self._killpg(signal.SIGKILL)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        kill_marked(self.marker)

    def _killpg(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class DockerRunner(ProcessRunner):
    """Runs ``argv`` in a container of the requested image (the ``docker`` instance mode).

    The first element of ``argv`` becomes the container's entrypoint. The ``docker run``
    client itself is the local process whose exit code is the container's. The container uses
    the host's network, so loopback services of this machine are reachable from it; port
    mappings (``-p``) are recorded, not applied.
    """

    def __init__(self, marker: str, name: str, docker: str = "docker") -> None:
        super().__init__(marker)
        self.name = name
        self.docker = docker

    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path,
              image: str, mounts: Mapping[str, Path]) -> None:
        # Host networking: like a real Vast host dialling out to a public server, the container
        # reaches services of this machine (Temporal on loopback) at their usual addresses.
        cmd = [self.docker, "run", "--name", self.name, "--pull", "never", "--init", "--network", "host",
               "--label", f"vastsim={self.marker}", "-e", f"{MARKER_ENV}={self.marker}"]
        passed = {}
        for key, value in env.items():
            if key in ("PATH", "HOME", "LANG"):
                continue
            if key.startswith("DOCKER_"):  # would steer the client itself
                cmd += ["-e", f"{key}={value}"]
            else:  # the value from the client's environment: argv is visible to every local user (ps)
                cmd += ["-e", key]
                passed[key] = value
        for mount_path, host_dir in mounts.items():
            cmd += ["-v", f"{host_dir}:{mount_path}"]
        if argv:
            cmd += ["--entrypoint", argv[0], image, *argv[1:]]
        else:
            cmd += [image]
        client_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "DOCKER_HOST",
                                                                  "DOCKER_CONFIG", "DOCKER_CONTEXT")}
        client_env.update(passed)
        super().start(cmd, client_env, cwd, log_path, image, mounts)

    def wait(self, kill_group: bool = True) -> int:
        code = super().wait(kill_group)
        self._remove()
        return code

    def kill(self) -> None:
        self._remove()
        super().kill()

    def _remove(self) -> None:
        try:
            subprocess.run([self.docker, "rm", "-f", self.name], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass


def wait_gone(pids: Sequence[int], timeout: float = 5.0) -> bool:
    """Wait until none of ``pids`` is a live process; returns whether that happened in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return True
        time.sleep(0.05)
    return not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
