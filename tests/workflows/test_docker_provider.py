"""Functions whose image needs a container run on this host's Docker engine, with limits.

Needs a running Docker engine with the local base image (``scripts/docker-services``, run by
``scripts/test`` as root, as in CI): these tests fail, never skip, without one.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import apothic
from apothic import App, Image

from ..conftest import wait_until

pytestmark = pytest.mark.usefixtures("control_worker")

PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def containers_of(app: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=apothic.app={app}"], capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_an_image_with_shell_steps_runs_in_docker_with_its_limits_and_is_removed(app_name: str) -> None:
    app = App(app_name)
    image = Image.debian_slim(python_version=PY).run_commands(
        "echo built-by-a-step > /etc/apothic-marker", f"echo step-output-of-{app_name}"
    ).env(STAGE="docker")

    @app.function(image=image, cpu=1, memory_mb=300, timeout_s=120)
    def inside(payload: bytes = b"") -> dict:
        import os

        def read(path: str) -> str:
            try:
                with open(path) as f:
                    return f.read().strip()
            except OSError as e:
                return f"missing: {e}"

        return {
            "marker": read("/etc/apothic-marker"),
            "stage": os.environ.get("STAGE"),
            # cgroup v2, else v1
            "memory_max": read("/sys/fs/cgroup/memory.max")
            if os.path.exists("/sys/fs/cgroup/memory.max")
            else read("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
            "cpu_max": read("/sys/fs/cgroup/cpu.max")
            if os.path.exists("/sys/fs/cgroup/cpu.max")
            else read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") + " " + read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
            "dockerenv": os.path.exists("/.dockerenv"),
            "payload": payload[::-1],
        }

    app.deploy()
    job = inside.spawn()
    out = job.wait(timeout_s=600)
    # The build's output streamed into the job's events, before the function started.
    events = list(job.watch(snapshot=True))
    kinds = [e.event for e in events]
    lines = [line for e in events if e.event == "image" for line in e.data.get("lines", [])]
    assert any(f"step-output-of-{app_name}" in line for line in lines), events
    image_events = [e.data.get("status") for e in events if e.event == "image"]
    assert image_events[0] == "building" and image_events[-1] == "built", image_events
    assert kinds.index("image") < kinds.index("container") < kinds.index("started")
    assert out["marker"] == "built-by-a-step"
    assert out["stage"] == "docker"
    assert out["dockerenv"] is True
    assert int(out["memory_max"]) == 300 * 1024 * 1024
    quota, period = out["cpu_max"].split()
    assert int(quota) == int(period)  # one core
    # A second call reuses the warm container, with arguments and a result large enough to
    # travel through the blob store (a folder of this host, shared with the container).
    big = os.urandom(3 * 1024 * 1024)
    again = inside.remote(big, timeout_s=120)
    assert again["marker"] == "built-by-a-step" and again["payload"] == big[::-1]
    # After the idle window it drains and is removed.
    assert containers_of(app_name)
    wait_until(lambda: not containers_of(app_name), timeout=60, what="the container to be removed")


def test_a_failing_image_step_fails_the_job_naming_the_step_and_its_output(app_name: str) -> None:
    app = App(app_name)
    image = Image.debian_slim(python_version=PY).run_commands("echo about-to-fail; exit 7")

    @app.function(image=image, timeout_s=60)
    def never() -> None: ...

    app.deploy()
    with pytest.raises(apothic.ApothicError) as info:
        never.remote(timeout_s=300)
    text = str(info.value)
    assert "exit 7" in text or "exit code 7" in text or "status 7" in text, text
    assert "about-to-fail" in text


def test_a_cancelled_job_in_docker_stops_and_its_container_is_removed(app_name: str) -> None:
    app = App(app_name)

    @app.function(image=Image.debian_slim(python_version=PY).run_commands("true"), timeout_s=300)
    def sleeper() -> None:
        import time

        time.sleep(120)

    app.deploy()
    job = sleeper.spawn()
    wait_until(lambda: job.status().value == "running", timeout=180, what="the job to run")
    assert containers_of(app_name)
    job.cancel()
    assert job.status().value == "cancelled"
    wait_until(lambda: not containers_of(app_name), timeout=60, what="the container to be removed")
