"""Cost of the image cache: first build versus reuse of the same image hash.

For the docker provider (``ensure_image``) and the process provider (``ensure_venv``), a spec
made unique for this run is built once (the first-build time), then ensured again: the
cached path, timed as the first call in a fresh interpreter (modules imported beforehand;
the runtime fingerprint and the Docker client are made within the call) and as the median
of repeated calls in the same process. The docker part needs
``scripts/docker-services``; pass ``--skip-docker`` or ``--skip-venv`` to leave a part out.

    python bench/image_cache.py [--repeat 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

CHILD = """
import asyncio, sys, time
from pathlib import Path
from apothic import Image
kind, marker, root = sys.argv[1], sys.argv[2], sys.argv[3]
from apothic.placement.providers.images import ensure_image, ensure_venv
import docker
image = Image.debian_slim("3.11").pip_install("termcolor").env(APOTHIC_BENCH=marker)
async def main():
    t = time.perf_counter()
    if kind == "docker":
        ref = await ensure_image(image, registry=None)
        assert not ref.built
    else:
        await ensure_venv(image, root=Path(root))
    print(time.perf_counter() - t)
asyncio.run(main())
"""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def bench(kind: str, repeat: int, root: Path) -> None:
    from apothic import Image

    marker = uuid.uuid4().hex
    image = Image.debian_slim("3.11").pip_install("termcolor").env(APOTHIC_BENCH=marker)
    if kind == "docker":
        from apothic.placement.providers.images import ensure_image

        async def ensure():
            return await ensure_image(image, registry=None)
    else:
        from apothic.placement.providers.images import ensure_venv

        async def ensure():
            return await ensure_venv(image, root=root)

    started = time.perf_counter()
    await ensure()
    first = time.perf_counter() - started
    fresh = float(
        subprocess.run(
            [sys.executable, "-c", CHILD, kind, marker, str(root)], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    warm = []
    for _ in range(repeat):
        started = time.perf_counter()
        await ensure()
        warm.append(time.perf_counter() - started)
    print(
        f"{kind:7s} first build {first:7.2f} s | cached: first call in a new process {_ms(fresh)}, "
        f"median of {repeat} {_ms(statistics.median(warm))}, max {_ms(max(warm))}"
    )
    if kind == "docker":
        import docker

        docker.from_env().images.remove(f"apothic/image:{image.tag}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--skip-docker", action="store_true")
    parser.add_argument("--skip-venv", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="apothic-bench-venvs-") as tmp:
        if not args.skip_docker:
            asyncio.run(bench("docker", args.repeat, Path(tmp)))
        if not args.skip_venv:
            asyncio.run(bench("venv", args.repeat, Path(tmp)))


if __name__ == "__main__":
    main()
