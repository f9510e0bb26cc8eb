"""Hostile functions in a Docker container (the supervisor is the image's entrypoint under the
engine's init): a native hang past its timeout, and a segfault. Needs the Docker engine with the
local base image (``scripts/docker-services``): fails, never skips, without one."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

import apothic
from apothic import App, Image
from apothic.runtime._supervisor import KILL_GRACE_S

from ..conftest import job_info
from .test_hostile import native_sleep, wait_for_the_supervisor

pytestmark = pytest.mark.usefixtures("control_worker")

PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def test_in_docker_a_native_hang_times_out_and_a_segfault_is_the_functions_own(temporal: str, app_name: str) -> None:
    image = Image.debian_slim(python_version=PY).run_commands("echo hostile > /etc/apothic-hostile-marker")
    app = App(app_name)

    @app.function(image=image, timeout_s=3, max_containers=1)
    def work(mode: str) -> tuple[str, int, bool]:
        if mode == "ready":
            wait_for_the_supervisor()
        print(f"running {mode}", flush=True)
        if mode == "hang":
            native_sleep(3600)
        elif mode == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        return os.environ["APOTHIC_CONTAINER_ID"], os.getpid(), os.path.exists("/.dockerenv")

    app.deploy()
    container, first, in_docker = work.remote("ready", timeout_s=600)
    assert in_docker, "not in a Docker container"

    began = time.monotonic()
    with pytest.raises(apothic.FunctionTimeoutError, match="did not return to Python"):
        work.remote("hang", timeout_s=120)
    assert time.monotonic() - began < 3 + KILL_GRACE_S + 6
    container2, second, _ = work.remote("ready", timeout_s=120)
    assert container2 == container and second != first  # the same container, a fresh process

    job = work.spawn("segv")
    with pytest.raises(apothic.RemoteError, match="SIGSEGV") as err:
        job.wait(timeout_s=120)
    assert err.value.remote_type == "apothic.ProcessDied" and "running segv" in str(err.value)
    assert [(a.kind, a.retried) for a in job_info(temporal, job.job_id).attempts] == [("user", False)]
    assert work.remote("ok", timeout_s=120)[0] == container
