"""A remote traceback reads like a local one: the user's file names, line numbers and source
lines, from the first user frame on, even where the container has no copy of the file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("control_worker")

SCRIPT = textwrap.dedent('''\
    import sys
    from pathlib import Path

    import apothic

    app = apothic.App(sys.argv[1])


    def check(value):
        if value > 1:
            raise ValueError(f"value {value} is too large")
        return value


    @app.function()
    def scaled(x):
        doubled = x * 2
        return check(doubled)


    @app.function()
    async def scaled_later(x):
        tripled = x * 3
        return check(tripled)


    if __name__ == "__main__":
        app.deploy()
        # As on a machine without the user's files: the lines must come with the deployment.
        here = Path(__file__)
        here.rename(here.with_suffix(".moved"))
        for fn in (scaled, scaled_later):
            try:
                fn.remote(3)
            except ValueError as e:
                print(f"caught {type(e).__name__}: {e}")
                print("\\n".join(e.__notes__))
                print("=====")
            else:
                print("no error")
''')


def line_of(text: str) -> int:
    return next(i for i, line in enumerate(SCRIPT.splitlines(), 1) if line.strip() == text)


def test_a_remote_traceback_shows_the_users_file_lines_and_frames(app_name: str, tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    run = subprocess.run(
        [sys.executable, "script.py", app_name], cwd=tmp_path, env=dict(os.environ),
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert not script.exists()  # the container could not read it either
    reports = run.stdout.split("=====\n")[:2]
    assert len(reports) == 2, run.stdout
    raise_line = line_of('raise ValueError(f"value {value} is too large")')
    for report, (fn, caller, value) in zip(reports, [("scaled", "return check(doubled)", 6),
                                                     ("scaled_later", "return check(tripled)", 9)]):
        assert report.startswith(f"caught ValueError: value {value} is too large\n"), report
        assert "Remote traceback (job job-" in report
        frames = re.findall(r'^  File "(.*)", line (\d+), in (\w+)\n    (.*)$', report, re.MULTILINE)
        # Exactly the user's two frames: no runtime (or asyncio) frame before them, and each
        # names the user's file with the right line number and the line's text.
        assert frames == [
            (str(script), str(line_of(caller)), fn, caller),
            (str(script), str(raise_line), "check", 'raise ValueError(f"value {value} is too large")'),
        ], report
        assert "<dynamic-code>" not in report and "apothic/runtime" not in report, report
