"""Shared helpers for the benchmarks: a tuned dev server and worker processes."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from apothic._control._config import load_settings
from apothic._control._embedded import server_command, wait_for_port

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dev_server() -> Iterator[str]:
    """A dev server with temporal-dev.yaml's settings on a free port (or the one in the env)."""
    if os.environ.get("APOTHIC_TEMPORAL_ADDRESS"):
        yield os.environ["APOTHIC_TEMPORAL_ADDRESS"]
        return
    tmp = tempfile.mkdtemp(prefix="apothic-bench-")
    port = free_port()
    server = load_settings(port=port, db_filename=f"{tmp}/temporal.db", headless=True).server
    proc = subprocess.Popen(server_command(server), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        address = f"127.0.0.1:{port}"
        os.environ["APOTHIC_TEMPORAL_ADDRESS"] = address
        os.environ.setdefault("APOTHIC_HOME", tmp)
        yield address
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def process(*args: str) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, *args], env=dict(os.environ), cwd=str(ROOT))
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(values_s: list[float]) -> tuple[float, float]:
    ms = [v * 1000 for v in values_s]
    return statistics.median(ms), percentile(ms, 0.95)


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out
