"""The container supervisor's parts that need no server: its wording, its constants, its sweep of
folders left by killed supervisors, and its start (no Temporal import)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from apothic import _contracts
from apothic.runtime import _supervisor
from apothic.runtime._runtime import HEARTBEAT_EVERY_S, INTERRUPT_GRACE_S
from apothic.runtime._supervisor import died_message, how_it_ended

from ..conftest import ROOT


def test_its_constants_are_the_contracts_and_it_outwaits_the_runtime() -> None:
    assert (_supervisor.EXIT_OK, _supervisor.EXIT_REPLACE) == (_contracts.EXIT_OK, _contracts.EXIT_REPLACE)
    assert (_supervisor.NOT_RUN, _supervisor.PROCESS_DIED) == (_contracts.NOT_RUN, _contracts.PROCESS_DIED)
    # A runtime that can interrupt reports the timeout itself before the supervisor kills it.
    assert _supervisor.KILL_GRACE_S > INTERRUPT_GRACE_S + 2 * HEARTBEAT_EVERY_S
    # The supervisor heartbeats for a silent runtime well within the server's 5 s heartbeat timeout.
    assert _supervisor.SILENT_S + _supervisor.BEAT_EVERY_S < 5


def test_how_a_process_ended_is_named() -> None:
    assert how_it_ended(1) == "exited with code 1"
    assert how_it_ended(-signal.SIGSEGV).startswith("was killed by signal 11 (SIGSEGV")
    assert "out of memory" in how_it_ended(-signal.SIGKILL)


def test_the_message_shows_the_output_and_where_a_fatal_signal_hit() -> None:
    logs = ("step 1\nstep 2\nFatal Python error: Segmentation fault\n\nThread 0x1 (most recent call first):\n"
            '  File "a.py", line 3 in other\n\nCurrent thread 0x2 (most recent call first):\n'
            '  File "b.py", line 9 in crash\n\nExtension modules: x (total: 1)\n')
    text = died_message("was killed by signal 11 (SIGSEGV: Segmentation fault)", logs, 0)
    assert "Its last output:\nstep 1\nstep 2\n" in text
    assert 'line 9 in crash' in text and "in other" not in text and "Extension modules" not in text
    assert died_message("exited with code 3", "", 2).endswith("(2 other input(s) ran in the process at the time). "
                                                              "It printed nothing.")


def test_a_start_sweeps_the_folders_of_supervisors_that_are_gone(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "apothic-container-stale"
    stale.mkdir()
    (stale / "owner").write_text(f"{dead.pid} 12345\n")
    (stale / "task0-1").mkdir()
    (stale / "task0-1" / "apothic-log-x.txt").write_bytes(b"y" * 1000)
    live = tmp_path / "apothic-container-live"
    live.mkdir()
    (live / "owner").write_text(f"{os.getpid()} {_supervisor._start_time(os.getpid())}\n")
    young = tmp_path / "apothic-container-young"  # being made: no owner file yet
    young.mkdir()
    forgotten = tmp_path / "apothic-container-forgotten"  # no owner file, and old
    forgotten.mkdir()
    old = time.time() - _supervisor.STALE_DIR_S - 10
    os.utime(forgotten, (old, old))
    other = tmp_path / "something-else"
    other.mkdir()
    folder = Path(_supervisor._make_dir())
    assert not stale.exists() and not forgotten.exists()
    assert live.exists() and young.exists() and other.exists()
    assert folder.parent == tmp_path and (folder / "owner").read_text().startswith(f"{os.getpid()} ")


def test_the_supervisor_starts_without_temporal(tmp_path: Path) -> None:
    """Its cold start: the standard library only (Temporal's SDK loads once a runtime serves)."""
    code = ("import sys, apothic.runtime._supervisor, apothic.runtime.__main__; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('temporalio', 'asyncio', 'pydantic')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]", out
