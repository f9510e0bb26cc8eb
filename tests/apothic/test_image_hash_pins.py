"""Pinned content hashes of representative image specs.

The image hash is every built image's cache key: if one of these values changes, every
user's image is rebuilt. They were computed once and must stay byte-identical; change the
canonical form on purpose only (bump the format version), then update the values here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from apothic import Image

PINNED = {
    "debian_slim": "10bdefdac82702b6c204c59586d753344a444f2668896ebcd5b9456563274713",
    "every_text_step": "39767a6cba10291a35e0e66b6f4c4b054afd01dd27f91f994b197658c42e0c61",
    "registry": "43bf3a324365e8842fba7686de660f856a8989879c714d85f55d2a86cbdce988",
    "local_file": "ccdb63fd21619164d292d6c0e1405b91cb1c3445d654dac83c89a1cd794513ff",
    "local_dir": "61a530aa419f9b1fe0698e2141d9c37bc68a371d6a7a096b629bc9a2af0cff91",
    "python_source": "f429725d27974d07ff783ee98a159b4a58f7ffca4c7af61f778e305d2e9edd7e",
    "dockerfile_with_copy": "312066f30531785b79a261e8fdee030dda67a111a67d34f877db7cbb00809e42",
    "dockerfile_without_context": "a7283946b7f602574124bfc640625b7322962c8870fb897642296f6769a95538",
}

# Fixed names, so that the recorded module names (which are hashed) never change.
MODULE, PACKAGE = "apothic_pinned_module", "apothic_pinned_package"


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def representative_specs(root: Path) -> dict[str, Image]:
    """Build one spec per kind of base and step from fixed content written under ``root``.

    Modules named :data:`MODULE` and :data:`PACKAGE` are written to ``root / "site"``, which
    must be on ``sys.path``.
    """
    base = Image.debian_slim("3.11")
    specs = {"debian_slim": base}
    specs["every_text_step"] = (
        base.pip_install(
            "pandas",
            "numpy==2.1.0",
            index_url="https://pypi.example.com/simple",
            extra_index_url="https://extra.example.com/simple",
            pre=True,
        )
        .uv_pip_install("torch", "accelerate>=0.30")
        .apt_install("git", "curl")
        .env({"HF_HOME": "/cache"}, PYTHONUNBUFFERED="1")
        .workdir("/app/")
        .run_commands("mkdir -p /data", "echo done")
    )
    specs["registry"] = Image.from_registry(
        "ghcr.io/org/app@sha256:" + "ab" * 32, add_python="3.12"
    ).pip_install("requests")

    _write(root / "files" / "config.toml", b"[tool]\nname = 'x'\n")
    _write(root / "files" / "run.sh", b"#!/bin/sh\necho hi\n", 0o755)
    specs["local_file"] = base.add_local_file(
        root / "files" / "config.toml", "/etc/app/"
    ).add_local_file(root / "files" / "run.sh", "/usr/local/bin/run")

    tree = root / "tree"
    _write(tree / "a.txt", b"alpha\n")
    _write(tree / "bin" / "tool", b"#!/bin/sh\n", 0o755)
    _write(tree / "sub" / "deep" / "b.bin", bytes(range(256)))
    _write(tree / "logs" / "x.log", b"ignored\n")
    _write(tree / "sub" / "c.tmp", b"ignored too\n")
    (tree / "empty").mkdir()
    os.symlink("a.txt", tree / "link_to_file")
    os.symlink("sub", tree / "link_to_dir")
    os.symlink("nowhere", tree / "dangling")
    specs["local_dir"] = base.add_local_dir(tree, "/srv/tree", ignore=["logs/", "*.tmp"])

    site = root / "site"
    _write(site / f"{MODULE}.py", b"X = 1\n")
    _write(site / PACKAGE / "__init__.py", b"")
    _write(site / PACKAGE / "core.py", b"Y = 2\n")
    _write(site / PACKAGE / "__pycache__" / "core.cpython-311.pyc", b"not hashed")
    specs["python_source"] = base.add_local_python_source(PACKAGE, MODULE, f"{PACKAGE}.core")

    ctx = root / "ctx"
    _write(ctx / "Dockerfile", b"FROM python:3.11-slim\nCOPY app/ /app/\n")
    _write(ctx / "app" / "main.py", b"print('hi')\n")
    specs["dockerfile_with_copy"] = Image.from_dockerfile(ctx / "Dockerfile").env(A="1")
    _write(
        root / "other" / "Dockerfile",
        b"FROM builder AS b\nFROM debian:12\nCOPY --from=b /out /out\n",
    )
    specs["dockerfile_without_context"] = Image.from_dockerfile(
        root / "other" / "Dockerfile", add_python="3.10"
    )
    return specs


@pytest.fixture
def specs(tmp_path, monkeypatch):
    (tmp_path / "site").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    try:
        yield representative_specs(tmp_path)
    finally:
        for name in (MODULE, PACKAGE, f"{PACKAGE}.core"):
            sys.modules.pop(name, None)


def test_representative_hashes_are_pinned(specs):
    assert {name: image.hash for name, image in specs.items()} == PINNED


def test_pinned_specs_survive_a_json_round_trip(specs):
    import json

    for name, image in specs.items():
        again = Image.from_dict(json.loads(json.dumps(image.to_dict())))
        assert again.hash == PINNED[name], name
