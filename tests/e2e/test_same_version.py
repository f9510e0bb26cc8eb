"""Running an app file as a script and deploying it with the CLI is the same code: one
version, whichever way and however often it is deployed, so fleets stay warm."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .cli import apothic

pytestmark = pytest.mark.usefixtures("control_worker")


def test_script_and_cli_deploy_the_same_version(tmp_path: Path, app_name: str) -> None:
    script = tmp_path / "sameapp.py"
    # A class and a module-level constant: both are pickled by value with the function.
    script.write_text(textwrap.dedent(f"""
        import apothic

        app = apothic.App("{app_name}")
        FACTOR = 3


        class Box:
            def __init__(self, v):
                self.v = v


        @app.function()
        def triple(x: int) -> int:
            return Box(x * FACTOR).v


        if __name__ == "__main__":
            print("version", app.deploy().version)
            print("result", triple.remote(2))
    """))

    def as_script(result: int = 6) -> str:
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=dict(os.environ),
                             cwd=str(tmp_path), timeout=180)
        assert out.returncode == 0, out.stderr
        assert f"result {result}" in out.stdout
        return out.stdout.split("version ")[1].split()[0]

    assert as_script() == "1"
    assert "unchanged, still version 1" in apothic("deploy", str(script)).stdout
    assert as_script() == "1"
    assert apothic("run", f"{script}::triple", "4").stdout.strip() == "12"
    assert as_script() == "1"

    # A real change is a new version, so the digest does see the code.
    script.write_text(script.read_text().replace("FACTOR = 3", "FACTOR = 5"))
    assert "deployed version 2" in apothic("deploy", str(script)).stdout
    assert as_script(result=10) == "2"
