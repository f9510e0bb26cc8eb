"""Images: a function whose image has a package this machine does not need.

    apothic run examples/images.py

The image is built (or taken from the cache) when its first container starts; the build's
lines show as it runs. `with image.imports():` imports what exists only inside the image: here
a missing package is no error, and the function finds the real module in its container.

Expected output:
    1  2
    GREETING=from the image
"""

import os
import sys

import apothic

# The process provider turns this image into a virtual environment of this Python version.
image = (
    apothic.Image.debian_slim(python_version=f"{sys.version_info.major}.{sys.version_info.minor}")
    .pip_install("tabulate")
    .env(GREETING="from the image")
)

with image.imports():
    import tabulate

app = apothic.App("example-images", image=image)  # the image of every function of the app


@app.function(timeout_s=300)
def table(rows: list[list[int]]) -> str:
    return tabulate.tabulate(rows, tablefmt="plain")


@app.function()
def greeting() -> str:
    return f"GREETING={os.environ.get('GREETING')}"


@app.local_entrypoint()
def main() -> None:
    print(table.remote([[1, 2]], timeout_s=600))
    print(greeting.remote())
