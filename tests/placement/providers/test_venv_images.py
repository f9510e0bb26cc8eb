"""Virtual-environment images for the process provider (real venvs, real package installs)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from apothic.placement.providers.images import (
    MANIFEST,
    ImageBuildFailed,
    ImageNotSupported,
    ensure_venv,
    find_uv,
    read_venv_image,
    repack_distribution,
)

from apothic import Image

HOST_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv-project")
    (root / "settings.toml").write_text("answer = 42\n")
    (root / "assets").mkdir()
    (root / "assets" / "a.txt").write_text("A")
    (root / "assets" / "tmp.log").write_text("ignored")
    (root / "src").mkdir()
    (root / "src" / "venvtest_helper.py").write_text("def greet():\n    return 'hi from the image'\n")
    sys.path.insert(0, str(root / "src"))
    yield root
    sys.path.remove(str(root / "src"))


@pytest.fixture(scope="module")
def image(project: Path) -> Image:
    return (
        Image.debian_slim(HOST_PYTHON)
        .pip_install("termcolor")
        .uv_pip_install("iniconfig")
        .env(APOTHIC_TEST_FLAVOUR="venv")
        .workdir("/app")
        .add_local_file(project / "settings.toml", "/app/settings.toml")
        .add_local_dir(project / "assets", "/app/assets", ignore=["*.log"])
        .add_local_python_source("venvtest_helper")
    )


@pytest.fixture(scope="module")
async def built(image: Image, tmp_path_factory: pytest.TempPathFactory):
    """Two concurrent builders of the same image: one builds, the other waits and reuses."""
    root = tmp_path_factory.mktemp("venvs")
    outputs: list[list[str]] = [[], []]
    started = time.perf_counter()
    paths = await asyncio.gather(*(ensure_venv(image, root=root, on_output=out.append) for out in outputs))
    return root, paths, outputs, time.perf_counter() - started


async def test_container_only_steps_are_refused_naming_docker(tmp_path):
    image = (
        Image.debian_slim(HOST_PYTHON).pip_install("termcolor").apt_install("curl").run_commands("echo hi")
    )
    with pytest.raises(ImageNotSupported) as info:
        await ensure_venv(image, root=tmp_path / "venvs")
    message = str(info.value)
    assert info.value.step == "apt_install('curl')"
    assert "apt_install('curl')" in message and "run_commands('echo hi')" in message
    assert "docker provider" in message
    assert not (tmp_path / "venvs").exists()


@pytest.mark.parametrize(
    "image",
    [Image.from_registry("python:3.11-slim"), Image.debian_slim("3.12" if HOST_PYTHON != "3.12" else "3.13")],
    ids=["registry base", "other python"],
)
async def test_bases_a_venv_cannot_provide_are_refused(tmp_path, image):
    with pytest.raises(ImageNotSupported, match="docker"):
        await ensure_venv(image, root=tmp_path)


async def test_concurrent_builds_share_one_venv(built):
    root, (first, second), outputs, _ = built
    assert first == second
    assert len(list((root / ".store").iterdir())) == 1
    # exactly one of the two builders ran the steps
    ran = [any(line == "==> pip_install('termcolor')" for line in out) for out in outputs]
    assert sorted(ran) == [False, True]


async def test_the_venv_has_apothic_the_packages_and_the_files(built, project):
    _, (path, _), outputs, _ = built
    image = read_venv_image(path)
    assert image.env["APOTHIC_TEST_FLAVOUR"] == "venv"
    # The image's paths are kept as written (the process provider shows them there), not rebased.
    assert image.workdir == "/app" and image.paths == ("/app",)
    assert "APOTHIC_IMAGE_ROOT" not in image.env
    assert (image.folder("/app/settings.toml")).read_text() == "answer = 42\n"
    assert sorted(p.name for p in image.folder("/app/assets").iterdir()) == ["a.txt"]
    log = "\n".join(outputs[0] + outputs[1])
    if find_uv() is None:
        assert "uv is not installed on this host; installing with pip instead" in log
    script = (
        "import json, sys, termcolor, iniconfig, venvtest_helper, apothic.runtime; "
        "print(json.dumps({'prefix': sys.prefix, 'greet': venvtest_helper.greet(), "
        "'termcolor': termcolor.__file__}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [str(image.python), "-c", script],
        cwd=image.folder("/app"),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    facts = json.loads(out.stdout)
    assert facts["greet"] == "hi from the image"
    assert Path(facts["prefix"]).resolve() == path.resolve()
    assert Path(facts["termcolor"]).resolve().is_relative_to(path.resolve())


async def test_the_cached_path_takes_milliseconds(built, image):
    root, (path, _), _, first_s = built
    lines: list[str] = []
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        again = await ensure_venv(image, root=root, on_output=lines.append)
        timings.append(time.perf_counter() - started)
    assert again == path and lines == []
    assert min(timings) < 0.01, (timings, first_s)


async def test_a_failing_step_is_named_and_publishes_nothing(tmp_path):
    image = Image.debian_slim(HOST_PYTHON).pip_install("nonexistent-pkg-xyz")
    root = tmp_path / "venvs"
    with pytest.raises(ImageBuildFailed) as info:
        await ensure_venv(image, root=root)
    assert info.value.step == "pip_install('nonexistent-pkg-xyz')"
    assert "nonexistent-pkg-xyz" in info.value.output_tail
    assert [p for p in root.iterdir() if not p.name.startswith(".")] == []
    assert list((root / ".store").iterdir()) == []
    assert not list(root.glob(f"*/{MANIFEST}"))


def test_repack_distribution_makes_an_installable_wheel(tmp_path):
    dist = importlib.metadata.distribution("cloudpickle")
    wheel = repack_distribution(dist, tmp_path / "wheels")
    assert wheel.name.startswith(f"cloudpickle-{dist.version}-")
    target = tmp_path / "target"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [sys.executable, "-c", "import cloudpickle; print(cloudpickle.__version__, cloudpickle.__file__)"],
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0] == dist.version and out[1].startswith(str(target))
