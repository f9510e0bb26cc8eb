"""Building and reusing images for the docker provider, on the real engine and local registry.

Needs ``scripts/docker-services`` (engine, base image, registry on 127.0.0.1:5000). Without
them these tests fail, naming the fix; they are never skipped. The first derived build
pays for the runtime layer (about 20 s); later builds from the same base reuse it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import docker.errors
import pytest
from apothic.placement.providers.images import (
    DERIVED_REPOSITORY,
    ImageBuildFailed,
    ensure_image,
)

from apothic import Image

from .conftest import BASE, REGISTRY, docker_engine, require_registry

# Specs carry this run's id, so that runs sharing an engine build and delete their own images.
RUN = uuid.uuid4().hex[:10]


def spec(**env: str) -> Image:
    """A debian_slim spec unique to this test run."""
    return Image.debian_slim("3.11").env(APOTHIC_TEST_RUN=RUN, **env)


@pytest.fixture(scope="module")
def engine():
    client = docker_engine()
    yield client
    for image in client.images.list(filters={"label": "apothic.spec"}):
        if RUN in image.labels.get("apothic.spec", ""):
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image.id, force=True)  # tags and registry digests


def run_in(engine, image: str, script: str) -> str:
    """Run ``python -c script`` in a throwaway container of ``image``; return its output."""
    out = engine.containers.run(image, ["python", "-c", script], remove=True, network_mode="none")
    return out.decode()


def build_containers(engine, image: Image) -> list:
    """Build containers of ``image`` still on the engine."""
    prefix = f"apothic-build-{image.tag}-"
    return [c for c in engine.containers.list(all=True) if c.name.startswith(prefix)]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Local files, a folder with an ignored file, and an importable module."""
    root = tmp_path_factory.mktemp("project")
    (root / "config.txt").write_text("config-v1")
    (root / "data").mkdir()
    (root / "data" / "keep.csv").write_text("a,b\n1,2\n")
    (root / "data" / "skip.log").write_text("ignored")
    (root / "data" / "sub").mkdir()
    (root / "data" / "sub" / "deep.txt").write_text("deep")
    pkg = root / "src" / "imgtest_helpers"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("def answer():\n    return 42\n")
    sys.path.insert(0, str(root / "src"))
    yield root
    sys.path.remove(str(root / "src"))


@pytest.fixture(scope="module")
def rich_image(project: Path) -> Image:
    return (
        spec()
        .pip_install("termcolor")
        .uv_pip_install("iniconfig")
        .env(APOTHIC_TEST_FLAVOUR="rich", PYTHONDONTWRITEBYTECODE="1")
        .run_commands("echo from-run-commands > /etc/apothic-test-marker", "mkdir -p /srv/cache")
        .add_local_file(project / "config.txt", "/app/config.txt")
        .add_local_dir(project / "data", "/app/data", ignore=["*.log"])
        .add_local_python_source("imgtest_helpers")
        .workdir("/app")
    )


@pytest.fixture(scope="module")
async def rich_build(engine, rich_image: Image):
    lines: list[str] = []
    started = time.perf_counter()
    ref = await ensure_image(rich_image, registry=None, on_output=lines.append)
    return ref, lines, time.perf_counter() - started


async def test_base_only_debian_slim_resolves_to_the_local_base(engine):
    lines: list[str] = []
    ref = await ensure_image(Image.debian_slim("3.11"), registry=REGISTRY, on_output=lines.append)
    assert lines == []  # nothing built, pulled or pushed
    assert ref.ref == BASE and not ref.built and not ref.has_runtime
    assert ref.image_id == engine.images.get(BASE).id
    assert ref.pushed_ref is None  # base images are not pushed
    assert not [ln for ln in lines if ln.startswith("==> ")]


async def test_unsupported_debian_python_fails_clearly(engine):
    with pytest.raises(ImageBuildFailed, match="no local base image provides Python 3.12"):
        await ensure_image(Image.debian_slim("3.12").pip_install("termcolor"), registry=None)


async def test_rich_spec_builds_a_derived_image_with_every_step(engine, rich_image, rich_build):
    ref, lines, _ = rich_build
    assert ref.built and ref.has_runtime
    assert ref.ref == f"{DERIVED_REPOSITORY}:{rich_image.tag}"
    assert "==> pip_install('termcolor')" in lines
    assert "==> run_commands('mkdir -p /srv/cache')" in lines
    assert any("uv is not installed in this image" in ln for ln in lines)
    labels = engine.images.get(ref.ref).labels
    assert labels["apothic.image.hash"] == rich_image.hash
    script = """
import json, os, pathlib
import termcolor, iniconfig, imgtest_helpers, apothic.runtime
root = pathlib.Path('/app/data')
print(json.dumps({
    "cwd": os.getcwd(),
    "flavour": os.environ.get("APOTHIC_TEST_FLAVOUR"),
    "config": pathlib.Path('/app/config.txt').read_text(),
    "data": sorted(str(p.relative_to(root)) for p in root.rglob('*')),
    "marker": pathlib.Path('/etc/apothic-test-marker').read_text().strip(),
    "cache_dir": os.path.isdir('/srv/cache'),
    "answer": imgtest_helpers.answer(),
    "no_build_mounts": sorted(os.listdir('/run/apothic')),
}))
"""
    facts = json.loads(run_in(engine, ref.ref, script))
    assert facts == {
        "cwd": "/app",
        "flavour": "rich",
        "config": "config-v1",
        "data": ["keep.csv", "sub", "sub/deep.txt"],
        "marker": "from-run-commands",
        "cache_dir": True,
        "answer": 42,
        "no_build_mounts": [],
    }
    config = engine.images.get(ref.ref).attrs["Config"]
    env = dict(e.split("=", 1) for e in config["Env"])
    assert not any(k.startswith(("PIP_", "SSL_CERT", "REQUESTS_CA")) for k in env)  # build-only
    assert not config.get("Volumes")
    assert build_containers(engine, rich_image) == []


async def test_same_hash_is_reused_in_milliseconds(engine, rich_image, rich_build):
    ref, _, first_s = rich_build
    lines: list[str] = []
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        again = await ensure_image(rich_image, registry=None, on_output=lines.append)
        timings.append(time.perf_counter() - started)
    assert not again.built and again.image_id == ref.image_id
    assert lines == []
    # A hash lookup, no build: well under a second even on a busy machine (a build takes seconds).
    assert min(timings) < 0.5, (timings, first_s)


async def test_a_changed_step_builds_a_new_tag_and_apt_works(engine, rich_build):
    ref, _, _ = rich_build
    image = spec(APOTHIC_TEST_FLAVOUR="apt").apt_install("jq")
    lines: list[str] = []
    other = await ensure_image(image, registry=None, on_output=lines.append)
    assert other.built and other.ref != ref.ref and other.image_id != ref.image_id
    assert any("reusing apothic/runtime-layer:" in ln for ln in lines)  # shared runtime layer
    assert engine.images.get(ref.ref).id == ref.image_id  # the first one is still there
    out = engine.containers.run(other.ref, ["sh", "-c", "echo '{\"a\": 7}' | jq .a"], remove=True)
    assert out.decode().strip() == "7"


async def test_a_failing_pip_step_is_named_and_leaves_nothing(engine):
    image = spec(APOTHIC_TEST_FLAVOUR="failing").pip_install("nonexistent-pkg-xyz")
    with pytest.raises(ImageBuildFailed) as info:
        await ensure_image(image, registry=None)
    err = info.value
    assert err.step == "pip_install('nonexistent-pkg-xyz')"
    assert "nonexistent-pkg-xyz" in err.output_tail
    assert "pip_install('nonexistent-pkg-xyz')" in str(err)
    assert not engine.images.list(name=f"{DERIVED_REPOSITORY}:{image.tag}")
    assert build_containers(engine, image) == []


async def test_push_to_the_local_registry_and_pull_back(engine, rich_image, rich_build):
    require_registry()
    ref, _, _ = rich_build
    pushed = await ensure_image(rich_image, registry=REGISTRY)
    assert pushed.pushed_ref == f"{REGISTRY}/{DERIVED_REPOSITORY}:{rich_image.tag}"
    assert pushed.digest and pushed.digest.startswith("sha256:")
    assert pushed.pinned_ref == f"{REGISTRY}/{DERIVED_REPOSITORY}@{pushed.digest}"

    # The registry serves that manifest under the tag, with the same digest.
    req = urllib.request.Request(
        f"http://{REGISTRY}/v2/{DERIVED_REPOSITORY}/manifests/{rich_image.tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        method="HEAD",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Docker-Content-Digest"] == pushed.digest

    # A second ensure finds it pushed and does not push again.
    lines: list[str] = []
    again = await ensure_image(rich_image, registry=REGISTRY, on_output=lines.append)
    assert again.digest == pushed.digest and not again.built and lines == []

    # Delete it here, then use the pinned reference as a base: pulled back from the local
    # registry, used as it is, runtime included.
    engine.images.remove(pushed.pushed_ref)
    engine.images.remove(ref.ref)
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(ref.image_id)
    lines = []
    used = await ensure_image(Image.from_registry(pushed.pinned_ref), registry=None, on_output=lines.append)
    assert f"pulling {pushed.pinned_ref}" in lines
    assert used.ref == pushed.pinned_ref and used.has_runtime and not used.built
    assert used.image_id == ref.image_id and used.python == ref.python
    engine.images.get(used.image_id).tag(DERIVED_REPOSITORY, rich_image.tag)  # as it was


async def test_missing_registry_image_is_named_without_pulling(engine):
    lines: list[str] = []
    with pytest.raises(
        ImageBuildFailed, match=r"'ghcr\.io/apothic-test/absent:1' is not on this Docker engine"
    ):
        await ensure_image(
            Image.from_registry("ghcr.io/apothic-test/absent:1").pip_install("six"), registry=None,
            on_output=lines.append,
        )
    assert lines and not [line for line in lines if line.startswith("pulling")], lines


@pytest.fixture(scope="module")
def no_python_image(engine) -> str:
    """A local image with neither Python nor apt (so no distribution Python can be added)."""
    tag = f"apothic-test/no-python:{RUN}"
    ct = engine.containers.create(
        BASE,
        ["-c", "rm -f /usr/bin/python3* /usr/local/bin/python /usr/bin/apt-get"],
        entrypoint=["/bin/sh"],
    )
    try:
        ct.start()
        ct.wait()
        ct.commit(repository="apothic-test/no-python", tag=RUN)
    finally:
        ct.remove(force=True)
    yield tag
    with contextlib.suppress(docker.errors.APIError):
        engine.images.remove(tag, force=True)


async def test_an_image_without_the_python_fails_clearly(engine, no_python_image):
    for image in (
        Image.from_registry(no_python_image),
        Image.from_registry(no_python_image).pip_install("six"),
    ):
        with pytest.raises(ImageBuildFailed) as info:
            await ensure_image(image, registry=None)
        err = info.value
        assert err.step == "apothic runtime"
        assert "has no Python 3.11" in str(err) and "Fix:" in str(err)
        assert build_containers(engine, image) == []


async def test_dockerfile_base_gets_the_runtime_on_top(engine, tmp_path):
    (tmp_path / "hello.txt").write_text("hello from the context")
    (tmp_path / "Dockerfile").write_text(
        f"FROM {BASE}\nRUN echo built-by-dockerfile > /etc/from-dockerfile\nCOPY hello.txt /hello.txt\n"
    )
    image = Image.from_dockerfile(tmp_path / "Dockerfile").env(APOTHIC_TEST_RUN=RUN)
    lines: list[str] = []
    ref = await ensure_image(image, registry=None, on_output=lines.append)
    assert ref.built and ref.has_runtime
    assert any(ln.startswith("==> from_dockerfile(") for ln in lines)
    out = run_in(
        engine,
        ref.ref,
        "import apothic.runtime, pathlib; print(pathlib.Path('/etc/from-dockerfile').read_text().strip(), "
        "pathlib.Path('/hello.txt').read_text())",
    )
    assert out.strip() == "built-by-dockerfile hello from the context"


async def test_a_failing_dockerfile_is_named(engine, tmp_path):
    (tmp_path / "Dockerfile").write_text(f"FROM {BASE}\nRUN exit 3\n")
    with pytest.raises(ImageBuildFailed) as info:
        await ensure_image(Image.from_dockerfile(tmp_path / "Dockerfile"), registry=None)
    assert info.value.step.startswith("from_dockerfile(")
    assert "exit 3" in info.value.output_tail or "returned a non-zero code" in str(info.value)


async def test_uv_pip_install_uses_uv_when_the_image_has_it(engine):
    image = spec().pip_install("uv").uv_pip_install("iniconfig")
    lines: list[str] = []
    ref = await ensure_image(image, registry=None, on_output=lines.append)
    step = lines.index("==> uv_pip_install('iniconfig')")
    assert not any("uv is not installed" in ln for ln in lines[step:])
    assert any("+ iniconfig==" in ln for ln in lines[step:])  # uv's own report
    assert "ok" in run_in(engine, ref.ref, "import iniconfig; print('ok')")


async def test_cancelling_a_build_stops_its_container(engine):
    image = spec().run_commands("sleep 120")
    lines: list[str] = []
    task = asyncio.ensure_future(ensure_image(image, registry=None, on_output=lines.append))
    deadline = time.monotonic() + 120
    while not any(ln.startswith("==> run_commands(") for ln in lines) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)
    assert build_containers(engine, image), "the sleeping build container should be running"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 20
    while build_containers(engine, image) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert build_containers(engine, image) == []
    assert not engine.images.list(name=f"{DERIVED_REPOSITORY}:{image.tag}")


async def test_always_derive_puts_the_runtime_into_a_base_only_image(engine):
    ref = await ensure_image(Image.debian_slim("3.11"), registry=None, always_derive=True)
    assert ref.has_runtime and ref.ref == f"{DERIVED_REPOSITORY}:{Image.debian_slim('3.11').tag}"
    assert "ok" in run_in(engine, ref.ref, "import apothic.runtime; print('ok')")
