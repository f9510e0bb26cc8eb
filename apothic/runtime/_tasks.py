"""Several function processes in one container: ``tasks_per_container``.

``python -m apothic.runtime`` is the container's supervisor (``_supervisor``); with
``APOTHIC_TASKS_PER_CONTAINER=N`` in its environment it starts N runtimes (else one), each the
same command with ``APOTHIC_TASK_INDEX=i``, each its own Temporal worker polling the
deployment's queue, so one container runs N inputs side by side (N x ``concurrent_requests``
slots). The same command serves every provider: a process of this host, a Docker container's
entrypoint, a rented machine's onstart.

GPUs: the container's GPUs are the devices in ``CUDA_VISIBLE_DEVICES`` when its environment has
it (a process container inherits the control worker's), else ``APOTHIC_GPUS`` (a count the
provider passes, or ``all``: as many as ``nvidia-smi -L`` lists). With G GPUs and N tasks each
task gets ``CUDA_VISIBLE_DEVICES`` set to its own G // N of them (one each on an N-GPU
machine; the remainder stays unused); with fewer GPUs than tasks, task i shares GPU i mod G.
Without GPUs the variable is left as it was.

Life: each task drains by itself after its idle window (the runtime's rule), so a container
whose load fell runs fewer tasks, and it ends when its last task has ended. A task that exits
``EXIT_REPLACE`` (an input ignored its interruption), or that died running an input, is started
again in place, so the container keeps its slots. A task that fails otherwise fails the
container: the others are asked to drain and the container exits with that code. SIGTERM is
passed on to every task (each lets its in-flight inputs finish). The exit code goes to
``APOTHIC_STATUS_FILE`` and the last line of the output, as a single runtime did.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping

TASKS_ENV = "APOTHIC_TASKS_PER_CONTAINER"
TASK_INDEX_ENV = "APOTHIC_TASK_INDEX"
GPUS_ENV = "APOTHIC_GPUS"


def wanted_tasks(env: Mapping[str, str] = os.environ) -> int:
    """How many runtimes this process should supervise (1: it is the runtime itself)."""
    if TASK_INDEX_ENV in env:
        return 1  # a task of a supervisor
    try:
        return max(1, int(env.get(TASKS_ENV, "1")))
    except ValueError:
        return 1


def gpu_devices(env: Mapping[str, str]) -> list[str]:
    """The GPUs this container may use (device names as CUDA_VISIBLE_DEVICES spells them)."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip()]
    count = env.get(GPUS_ENV, "").strip()
    if count == "all":
        return [str(i) for i in range(_nvidia_gpus())]
    if count.isdigit():
        return [str(i) for i in range(int(count))]
    return []


def split_gpus(devices: list[str], tasks: int) -> list[str | None]:
    """Each task's CUDA_VISIBLE_DEVICES (None: leave the environment as it is)."""
    if not devices:
        return [None] * tasks
    if len(devices) < tasks:
        return [devices[i % len(devices)] for i in range(tasks)]
    share = len(devices) // tasks
    return [",".join(devices[i * share:(i + 1) * share]) for i in range(tasks)]


def _nvidia_gpus() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def task_env(env: Mapping[str, str], index: int, gpus: str | None) -> dict[str, str]:
    """The environment of task ``index``: the container's, plus its index, its own status file
    and its GPUs."""
    out = dict(env)
    out[TASK_INDEX_ENV] = str(index)
    status = env.get("APOTHIC_STATUS_FILE", "")
    if status:
        out["APOTHIC_STATUS_FILE"] = f"{status}.task{index}"
    if gpus is not None:
        out["CUDA_VISIBLE_DEVICES"] = gpus
    return out
