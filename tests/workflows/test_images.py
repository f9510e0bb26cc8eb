"""Images on the process provider: a function runs in its image's cached virtual environment."""

from __future__ import annotations

import sys

import pytest

from apothic import App, Image

pytestmark = pytest.mark.usefixtures("control_worker")


def test_a_function_runs_in_its_images_environment(app_name: str) -> None:
    app = App(app_name)
    image = Image.debian_slim(python_version=f"{sys.version_info.major}.{sys.version_info.minor}").pip_install(
        "tabulate"
    ).env(GREETING="from the image")

    @app.function(image=image, timeout_s=120)
    def table() -> dict:
        import os
        import sys

        import tabulate  # only in the image

        return {
            "table": tabulate.tabulate([[1, 2]], tablefmt="plain"),
            "prefix": sys.prefix,
            "greeting": os.environ.get("GREETING"),
        }

    with pytest.raises(ImportError):
        __import__("tabulate")  # not in this environment
    app.deploy()
    out = table.remote(timeout_s=600)
    assert out["table"] == "1  2"
    assert out["greeting"] == "from the image"
    assert out["prefix"] != sys.prefix and "venvs" in out["prefix"]
