"""Running the ``apothic`` command as a user does, for the end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys

from ..conftest import ROOT


def apothic(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``apothic ARGS`` in a fresh interpreter with this session's environment."""
    proc = subprocess.run(
        [sys.executable, "-m", "apothic", *args], capture_output=True, text=True, env=dict(os.environ),
        cwd=str(ROOT), timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"apothic {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc
