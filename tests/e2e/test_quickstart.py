"""The main job, as a new user runs it: the embedded default starts everything it needs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from apothic._control._embedded import live_pids

from ..conftest import ROOT, free_port


def test_quickstart_on_the_embedded_default(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "temporal-dev.yaml").read_text())
    config["server"].update(port=free_port(), ui_port=free_port(), db_filename=str(tmp_path / "temporal.db"))
    (tmp_path / "temporal-dev.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("APOTHIC_")}
    env.update(APOTHIC_CONFIG=str(tmp_path / "temporal-dev.yaml"), APOTHIC_HOME=str(tmp_path / "home"))
    try:
        run = subprocess.run(
            [sys.executable, "examples/quickstart.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stderr
        out = run.stdout
        assert "deployed quickstart version 1: slow_square, summarize" in out
        assert "remote(): Apothic runs Python functions as durable..." in out
        assert "wait(): 144, now completed" in out
        # The server and worker it started keep running for the next script, and the UI is up.
        os.environ["APOTHIC_HOME"], saved = str(tmp_path / "home"), os.environ.get("APOTHIC_HOME")
        try:
            assert live_pids("server") and live_pids("worker")
        finally:
            os.environ["APOTHIC_HOME"] = saved or ""
        again = subprocess.run(
            [sys.executable, "-m", "apothic", "jobs", "list", "--app", "quickstart"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )
        assert again.returncode == 0 and again.stdout.count("completed") == 3, again.stdout + again.stderr
    finally:
        stopped = subprocess.run(
            [sys.executable, "-m", "apothic", "stop"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
    assert "server" in stopped.stdout and "worker" in stopped.stdout, stopped.stdout + stopped.stderr
