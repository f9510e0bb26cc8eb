"""A cluster of its own for chaos tests: a dev server on its own database and a control worker,
each restartable (the ``cluster`` fixture of ``conftest``)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from apothic import ControlPlaneClient

from ..conftest import free_port, start_dev_server, start_worker, stop


class Cluster:
    """A dev server on its own database and a control worker, each restartable."""

    def __init__(self, tmp: Path, **extra_env: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.db = tmp / "temporal.db"
        self.env = dict(os.environ, APOTHIC_TEMPORAL_ADDRESS=self.address, APOTHIC_HOME=str(tmp), **extra_env)
        self.server = start_dev_server(self.db, self.port)
        self.worker = self.start_worker()
        self.client = ControlPlaneClient(self.address)

    def start_worker(self) -> subprocess.Popen:
        return start_worker(self.env, self.tmp / "worker.log")

    def restart_server(self, down_s: float) -> None:
        stop(self.server)
        time.sleep(down_s)
        self.server = start_dev_server(self.db, self.port)

    def close(self) -> None:
        stop(self.worker)
        stop(self.server)
