"""The process provider's adoption and release, on real processes of this host."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from apothic.placement.providers import ProcessProvider
from apothic.placement.providers.process import CONTAINER_ENV

from ...conftest import wait_until


def carrying(cid: str) -> list[int]:
    """Live processes of this host whose environment carries container id ``cid``."""
    marker = f"{CONTAINER_ENV}={cid}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0") \
                    and ") Z" not in (entry / "stat").read_text():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_a_container_is_adopted_by_its_id_when_its_pid_was_never_recorded(tmp_path: Path) -> None:
    provider = ProcessProvider(tmp_path)
    cid = f"t-{uuid.uuid4().hex[:10]}"
    env = dict(os.environ, **{CONTAINER_ENV: cid})
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    leader = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    try:
        wait_until(lambda: len(carrying(cid)) == 2, timeout=30, what="its child (same id, same session)")
        handle = provider.adopt(cid, 0)
        assert handle is not None and handle.pid == leader.pid  # the session leader, not its child
        assert provider.adopt(cid, leader.pid).pid == leader.pid
        assert provider.adopt(f"{cid}-other", 0) is None
        killed = provider.release(cid)
        assert leader.pid in killed and len(killed) == 2
        leader.wait(timeout=10)
        assert provider.adopt(cid, 0) is None and provider.adopt(cid, leader.pid) is None
    finally:
        provider.release(cid)
        if leader.poll() is None:
            leader.kill()
