"""Progress bars as a person sees them: a user's script run under a real pseudo-terminal
against the session's server draws a bar for ``map`` and ``spawn_map`` and leaves their final
counts; live output lines printed meanwhile are never garbled; the same script with its output
to a pipe carries no bar at all."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest

from ..conftest import ctrl_c_reaches

pytestmark = pytest.mark.usefixtures("control_worker")

COLUMNS = 120

SCRIPT = """
    import asyncio
    import apothic

    app = apothic.App("{app}")

    @app.function()
    def check(x: int) -> int:
        print(f"working on {{x}}")
        if x % 7 == 3:
            raise ValueError(f"bad input {{x}}")
        return x * x

    with app.run():  # live output on: each input's lines are printed while the bar is up
        results = check.map(range(20), return_exceptions=True)
        print("failed:", sum(isinstance(r, ValueError) for r in results), flush=True)
        print("jobs:", len(apothic.Job.gather(*check.spawn_map([0, 1, 2]))), flush=True)

        async def each() -> None:  # the caller prints between results while the bar is up
            async for r in check.map.aio(range(4), return_exceptions=True):
                print("got", "an error" if isinstance(r, ValueError) else r)

        asyncio.run(each())
"""


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("APOTHIC_PROGRESS", None)
    env.update(TERM="xterm-256color", PYTHONIOENCODING="utf-8")
    return env


def run_on_terminal(
    path: Path, timeout: float = 240, interrupt_when: bytes | None = None, code: int = 0
) -> bytes:
    """Run ``python path`` with stdin, stdout and stderr on a new pseudo-terminal of
    ``COLUMNS`` columns; everything it wrote, as the terminal received it. ``interrupt_when``:
    once the output holds it, the process gets SIGINT (Ctrl-C); it must exit with ``code``."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, COLUMNS, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, str(path)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=environment(),
        cwd=str(path.parent),
        start_new_session=True,
        preexec_fn=ctrl_c_reaches,
    )
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError as e:  # the child closed its side: everything has been read
                if e.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            out += chunk
            if interrupt_when is not None and interrupt_when in out:
                interrupt_when = None
                os.killpg(proc.pid, signal.SIGINT)
        assert interrupt_when is None, out.decode("utf-8", "replace")
        assert proc.wait(timeout=max(1.0, deadline - time.monotonic())) == code, (
            out.decode("utf-8", "replace")
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return bytes(out)


def screen(text: str) -> list[str]:
    """The rows left on the terminal: a row keeps what follows its last carriage return."""
    rows = text.replace("\r\n", "\n").split("\n")
    return [row.rsplit("\r", 1)[-1].replace("\x1b[K", "") for row in rows]


def test_a_map_on_a_terminal_shows_a_bar_with_its_final_counts_and_a_pipe_shows_none(
    tmp_path: Path, app_name: str
) -> None:
    path = tmp_path / "progress.py"
    path.write_text(textwrap.dedent(SCRIPT.format(app=app_name)))

    raw = run_on_terminal(path).decode("utf-8")
    rows = screen(raw)
    assert "failed: 3" in rows and "jobs: 3" in rows, raw
    got = ["got 0", "got 1", "got 4", "got an error"]
    assert [row for row in rows if "got " in row] == got, rows  # each a row of its own
    # The bar was drawn and redrawn in place, from its first state on ...
    assert "\r\x1b[K" in raw and re.search(
        r"\rcheck  ░+  0/20  0 failed  0:\d\d\x1b\[K", raw
    ), raw
    # ... and its final counts stay on the screen, one row each for the map and the spawn_map.
    final = [row for row in rows if row.startswith("check  ") and "20/20" in row]
    assert len(final) == 1 and re.fullmatch(
        r"check  █{30}  20/20  3 failed  [\d.]+/s  in \d+:\d\d", final[0]
    ), rows
    spawned = [row for row in rows if row.startswith("check spawn_map  ")]
    assert len(spawned) == 1 and re.fullmatch(
        r"check spawn_map  █+  3/3 submitted  0 failed  [\d.]+/s  in \d+:\d\d",
        spawned[0],
    ), rows
    assert all(len(row) < COLUMNS for row in rows), rows
    # Each input's output was printed above the bar: every such row is the line alone.
    working = [row for row in rows if "working on" in row]
    assert len([row for row in working if row.startswith("[check #")]) == 24, rows
    assert all(
        re.fullmatch(r"(\[check (#\d+|job-\w+)\] )?working on \d+", row)
        for row in working
    ), rows
    assert screen(raw)[-1] == "", raw  # nothing left drawn at the end

    piped = subprocess.run(
        [sys.executable, str(path)],
        check=False,
        capture_output=True,
        text=True,
        env=environment(),
        cwd=str(tmp_path),
        timeout=240,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.splitlines() == ["failed: 3", "jobs: 3", *got], piped.stdout
    for mark in ("\r", "\x1b", "█", "░", "ETA", "20/20", "submitted"):
        assert mark not in piped.stderr and mark not in piped.stdout, (
            mark,
            piped.stderr,
        )
    mapped = [line for line in piped.stderr.splitlines() if line.startswith("[check #")]
    assert len(mapped) == 24 and all("working on" in line for line in mapped), (
        piped.stderr
    )


def test_ctrl_c_during_a_map_on_a_terminal_leaves_no_bar_behind(
    tmp_path: Path, app_name: str
) -> None:
    path = tmp_path / "interrupted.py"
    path.write_text(
        textwrap.dedent(f"""
        import time
        import apothic

        app = apothic.App("{app_name}")

        @app.function()
        def slow(x: int) -> int:
            time.sleep(120)
            return x

        with app.run():
            slow.map(range(4))
    """)
    )
    raw = run_on_terminal(
        path, interrupt_when=b"0/4  0 failed  0:02", code=-signal.SIGINT
    ).decode("utf-8")
    rows = screen(raw)
    # The traceback starts on a row of its own and ends with the interrupt; the run then
    # cleans up; nothing of the bar is left on any row after it.
    assert (
        "Traceback (most recent call last):" in rows and "KeyboardInterrupt" in rows
    ), raw
    after = rows[rows.index("Traceback (most recent call last):") :]
    assert not any("0/4" in row or "░" in row for row in after), raw
    assert rows[-1] == "" and not raw.replace("\r\n", "\n").endswith("\x1b[K"), raw
