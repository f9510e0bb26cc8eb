"""Tests for apothic._image: the image specification value and its hash."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from apothic._image import (
    SUPPORTED_PYTHON_VERSIONS,
    AddLocalDirStep,
    AddLocalFileStep,
    AddLocalPythonSourceStep,
    EnvStep,
    Image,
    PipInstallStep,
)
from apothic.exceptions import InvalidError

HEX = set("0123456789abcdef")


def base() -> Image:
    return Image.debian_slim("3.11")


# --------------------------------------------------------------------------- bases


def test_debian_slim_defaults_to_the_calling_python():
    image = Image.debian_slim()
    expected = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert image.base.kind == "debian_slim"
    assert image.base.python_version == expected
    assert image.python_version == expected
    assert image.is_base_only()
    assert not image.needs_container()


@pytest.mark.parametrize("version", SUPPORTED_PYTHON_VERSIONS)
def test_debian_slim_accepts_supported_versions(version):
    assert Image.debian_slim(version).base.python_version == version


@pytest.mark.parametrize("version", ["3.8", "3.14", "2.7", "3", "3.11.7", "", "latest", 3.11])
def test_debian_slim_rejects_bad_versions(version):
    with pytest.raises(InvalidError) as info:
        Image.debian_slim(version)
    message = str(info.value)
    assert repr(version) in message
    assert "'3.9'" in message and "'3.13'" in message  # says what is allowed


def test_debian_slim_patch_version_suggests_fix():
    with pytest.raises(InvalidError, match=r"drop the patch version: python_version='3\.11'"):
        Image.debian_slim("3.11.7")


@pytest.mark.parametrize(
    "ref",
    [
        "python",
        "python:3.11-slim",
        "nvidia/cuda:12.4.1-runtime-ubuntu22.04",
        "ghcr.io/org/app:v1.2",
        "localhost:5000/team/app",
        "registry.example.com:443/a/b__c/d-e:latest",
        "python@sha256:" + "a" * 64,
        "ghcr.io/org/app:1.0@sha256:" + "0123456789abcdef" * 4,
    ],
)
def test_from_registry_accepts_valid_references(ref):
    image = Image.from_registry(ref)
    assert image.base.kind == "registry"
    assert image.base.ref == ref
    assert image.needs_container()


@pytest.mark.parametrize(
    "ref, reason",
    [
        ("", "non-empty"),
        ("Ubuntu:22.04", "lowercase"),
        ("python:", "tag ''"),
        ("python:-bad", "tag '-bad'"),
        ("python@sha256:abc", "64 lowercase hex"),
        ("python@md5:" + "a" * 64, "digest"),
        ("my image", "whitespace"),
        ("org//app", "component ''"),
        ("org/-app", "component '-app'"),
        ("-host.io/app", "registry host"),
        (None, "non-empty"),
    ],
)
def test_from_registry_rejects_bad_references(ref, reason):
    with pytest.raises(InvalidError) as info:
        Image.from_registry(ref)
    message = str(info.value)
    assert reason in message
    assert "name[:tag][@sha256:" in message  # says the expected form


def test_from_registry_add_python_is_validated_and_kept():
    image = Image.from_registry("ubuntu:22.04", add_python="3.12")
    assert image.base.add_python == "3.12"
    assert image.python_version == "3.12"
    with pytest.raises(InvalidError, match=r"add_python='3\.7'"):
        Image.from_registry("ubuntu:22.04", add_python="3.7")


def test_from_dockerfile_hashes_content_and_context_only_when_copied(tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    dockerfile = ctx / "Dockerfile"
    dockerfile.write_text("FROM python:3.11-slim\nRUN echo hi\n")
    (ctx / "app.py").write_text("print(1)\n")

    no_copy = Image.from_dockerfile(dockerfile)
    assert no_copy.base.kind == "dockerfile"
    assert no_copy.base.dockerfile == "FROM python:3.11-slim\nRUN echo hi\n"
    assert no_copy.base.context_dir == str(ctx)
    assert no_copy.base.context_hash is None  # no ADD/COPY: context not needed
    assert no_copy.needs_container()

    # A COPY --from= reads another stage, not the context.
    dockerfile.write_text("FROM a AS b\nFROM python:3.11\nCOPY --from=b /x /y\n")
    assert Image.from_dockerfile(dockerfile).base.context_hash is None

    dockerfile.write_text("FROM python:3.11-slim\ncopy app.py /app/\n")
    first = Image.from_dockerfile(dockerfile, context_dir=ctx)
    assert first.base.context_hash is not None
    assert first.hash != no_copy.hash

    (ctx / "app.py").write_text("print(2)\n")
    second = Image.from_dockerfile(dockerfile, context_dir=ctx)
    assert second.hash != first.hash

    # .git and __pycache__ are excluded from the context hash.
    (ctx / ".git").mkdir()
    (ctx / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (ctx / "__pycache__").mkdir()
    (ctx / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\x00\x01")
    assert Image.from_dockerfile(dockerfile, context_dir=ctx).hash == second.hash


def test_from_dockerfile_errors(tmp_path):
    with pytest.raises(InvalidError, match="does not exist"):
        Image.from_dockerfile(tmp_path / "missing" / "Dockerfile")
    with pytest.raises(InvalidError, match="is a directory"):
        Image.from_dockerfile(tmp_path)
    df = tmp_path / "Dockerfile"
    df.write_text("FROM python:3.11\n")
    with pytest.raises(InvalidError, match="not a directory"):
        Image.from_dockerfile(df, context_dir=tmp_path / "nope")


# --------------------------------------------------------------------------- immutability


def test_step_methods_return_new_images_and_leave_the_original_unchanged(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    original = base()
    before_steps, before_hash = original.steps, original.hash
    derived = [
        original.pip_install("numpy"),
        original.uv_pip_install("numpy"),
        original.apt_install("git"),
        original.env(A="1"),
        original.workdir("/app"),
        original.run_commands("echo hi"),
        original.add_local_file(tmp_path / "f.txt", "/f.txt"),
        original.add_local_dir(tmp_path, "/data"),
    ]
    for image in derived:
        assert image is not original
        assert len(image.steps) == 1
    assert original.steps == before_steps == ()
    assert original.hash == before_hash
    with pytest.raises(dataclasses.FrozenInstanceError):
        original.steps = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        derived[0].steps[0].packages = ("x",)  # type: ignore[misc]
    assert isinstance(derived[0].steps, tuple)


def test_empty_step_calls_return_the_same_image():
    image = base()
    assert image.pip_install() is image
    assert image.pip_install([]) is image
    assert image.apt_install() is image
    assert image.env() is image
    assert image.run_commands() is image
    assert image.add_local_python_source() is image


def test_step_kinds_and_queries(tmp_path):
    (tmp_path / "f").write_text("x")
    image = (
        base()
        .pip_install("a")
        .uv_pip_install("b")
        .apt_install("c")
        .env(D="1")
        .workdir("/w")
        .run_commands("e")
        .add_local_file(tmp_path / "f", "/f")
        .add_local_dir(tmp_path, "/d")
    )
    assert [s.kind for s in image.steps] == [
        "pip",
        "uv_pip",
        "apt",
        "env",
        "workdir",
        "run",
        "add_local_file",
        "add_local_dir",
    ]
    assert not image.is_base_only()
    assert image.needs_container()
    assert not base().pip_install("a").env(A="1").workdir("/w").needs_container()
    assert base().run_commands("x").needs_container()
    assert base().apt_install("x").needs_container()


# --------------------------------------------------------------------------- hash


def test_hash_and_tag_shape():
    image = base().pip_install("numpy")
    assert len(image.hash) == 64 and set(image.hash) <= HEX
    assert image.tag == image.hash[:16]


def test_hash_is_pinned_for_a_simple_image():
    # If this fails, the canonical form changed and every cached image will be rebuilt.
    # Change it on purpose only (bump the format version), then update the value.
    assert base().pip_install("numpy").hash == (
        "3c8efbfeb38c6920940142a3675d611ecec08443ba4fa53e131c02b45764974e"
    )


def test_same_spec_twice_gives_same_hash_and_equal_images():
    a = base().pip_install("numpy", "pandas").env(A="1", B="2").run_commands("x", "y")
    b = base().pip_install("numpy", "pandas").env(A="1", B="2").run_commands("x", "y")
    assert a == b
    assert a.hash == b.hash


def test_package_order_duplicates_whitespace_and_lists_do_not_change_the_hash():
    ref = base().pip_install("numpy", "pandas", "torch==2.4.0")
    same = [
        base().pip_install("torch==2.4.0", "pandas", "numpy"),
        base().pip_install(["pandas", "numpy"], "torch==2.4.0", "numpy"),
        base().pip_install(("torch==2.4.0",), [["numpy"], {"pandas"}]),
        base().pip_install("  numpy ", "pandas\t", "torch==2.4.0"),
    ]
    for image in same:
        assert isinstance(image.steps[0], PipInstallStep)
        assert image.steps[0].packages == ("numpy", "pandas", "torch==2.4.0")
        assert image.hash == ref.hash
    assert base().apt_install("git", "curl", "git").hash == base().apt_install("curl", "git").hash


def test_env_order_and_form_do_not_change_the_hash():
    a = base().env({"B": "2", "A": "1"})
    b = base().env(A="1", B="2")
    c = base().env({"A": "1"}, B="2")
    assert a.hash == b.hash == c.hash
    assert a.steps[0].vars == (("A", "1"), ("B", "2"))
    assert isinstance(a.steps[0], EnvStep) and a.steps[0].as_dict() == {"A": "1", "B": "2"}


def test_paths_are_normalised():
    assert base().workdir("/app/./x/../y/").steps[0].path == "/app/y"
    assert base().workdir("//app").hash == base().workdir("/app").hash


@pytest.mark.parametrize(
    "other",
    [
        lambda: Image.debian_slim("3.12").pip_install("numpy"),
        lambda: base().pip_install("numpy==2.0"),
        lambda: base().pip_install("numpy", "scipy"),
        lambda: base().uv_pip_install("numpy"),
        lambda: base().pip_install("numpy", pre=True),
        lambda: base().pip_install("numpy", index_url="https://example.com/simple"),
        lambda: base().pip_install("numpy", extra_index_url="https://example.com/simple"),
        lambda: base().pip_install("numpy").env(A="1"),
        lambda: base().pip_install("numpy").run_commands("true"),
        lambda: base().pip_install("numpy").workdir("/app"),
        lambda: base().pip_install("numpy").apt_install("git"),
        lambda: base().pip_install("numpy"),  # control: identical
    ],
)
def test_a_different_step_changes_the_hash(other):
    ref = base().pip_install("numpy")
    image = other()
    if image == ref:  # the control case
        assert image.hash == ref.hash
    else:
        assert image.hash != ref.hash


def test_env_value_and_run_command_text_are_hashed():
    assert base().env(A="1").hash != base().env(A="2").hash
    assert base().run_commands("a").hash != base().run_commands("b").hash


def test_step_order_matters():
    a = base().pip_install("numpy").apt_install("git")
    b = base().apt_install("git").pip_install("numpy")
    assert a.hash != b.hash
    # Command order within one step matters too: commands are not sorted.
    assert base().run_commands("a", "b").hash != base().run_commands("b", "a").hash
    # Splitting one install step into two is a different build.
    assert base().pip_install("a", "b").hash != base().pip_install("a").pip_install("b").hash


# --------------------------------------------------------------------------- local content


def _touch_mtime(path):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns + 10**10, st.st_mtime_ns + 10**10))


def test_add_local_file_hashes_content_not_mtime(tmp_path):
    f = tmp_path / "config.yaml"
    f.write_text("a: 1\n")
    first = base().add_local_file(f, "/etc/app/config.yaml")
    step = first.steps[0]
    assert isinstance(step, AddLocalFileStep)
    assert step.local_path == str(f)
    assert step.remote_path == "/etc/app/config.yaml"
    assert len(step.content_hash) == 64

    _touch_mtime(f)
    assert base().add_local_file(f, "/etc/app/config.yaml").hash == first.hash

    f.write_text("a: 2\n")
    assert base().add_local_file(f, "/etc/app/config.yaml").hash != first.hash
    # The first image keeps what it saw at definition time.
    assert first.steps[0] == step


def test_add_local_file_remote_path_and_exec_bit(tmp_path):
    f = tmp_path / "run.sh"
    f.write_text("echo hi\n")
    into_dir = base().add_local_file(f, "/opt/bin/")
    assert into_dir.steps[0].remote_path == "/opt/bin/run.sh"
    assert base().add_local_file(f, "/x").hash != base().add_local_file(f, "/y").hash

    before = base().add_local_file(f, "/x").hash
    os.chmod(f, 0o755)
    after = base().add_local_file(f, "/x")
    assert after.steps[0].executable is True
    assert after.hash != before


def test_local_path_is_not_part_of_the_hash(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "f.txt").write_text("same")
        (d / "sub").mkdir()
        (d / "sub" / "g.txt").write_text("same too")
    fa = base().add_local_file(a / "f.txt", "/f")
    fb = base().add_local_file(b / "f.txt", "/f")
    assert fa.hash == fb.hash
    ia, ib = base().add_local_dir(a, "/d"), base().add_local_dir(b, "/d")
    assert ia.hash == ib.hash
    assert ia != ib  # the local path is still recorded
    assert ia.to_dict() != ib.to_dict()


def test_add_local_dir_hashes_content_layout_not_mtime(tmp_path):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.txt").write_text("beta")

    def h(**kw):
        return base().add_local_dir(root, "/data", **kw).hash

    first = h()
    step = base().add_local_dir(root, "/data").steps[0]
    assert isinstance(step, AddLocalDirStep)
    assert (step.local_path, step.remote_path, step.ignore) == (str(root), "/data", ())
    _touch_mtime(root / "sub" / "b.txt")
    _touch_mtime(root / "sub")
    assert h() == first

    (root / "sub" / "b.txt").write_text("BETA")
    edited = h()
    assert edited != first

    (root / "sub" / "b.txt").rename(root / "sub" / "c.txt")
    renamed = h()
    assert renamed != edited

    (root / "empty").mkdir()
    assert h() != renamed  # empty directories are part of the layout


def test_add_local_dir_ignore_patterns(tmp_path):
    root = tmp_path / "proj"
    (root / "logs").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "src" / "main.py").write_text("print(1)")
    (root / "logs" / "today.log").write_text("1")
    (root / "src" / "debug.log").write_text("1")

    ignore = ["logs/", "*.log"]
    first = base().add_local_dir(root, "/app", ignore=ignore)
    assert first.steps[0].ignore == ("*.log", "logs")  # normalised and sorted
    (root / "logs" / "today.log").write_text("2")
    (root / "src" / "debug.log").write_text("2")
    (root / "logs" / "new.txt").write_text("ignored: whole dir skipped")
    assert base().add_local_dir(root, "/app", ignore=["*.log", "logs"]).hash == first.hash

    (root / "src" / "main.py").write_text("print(2)")
    assert base().add_local_dir(root, "/app", ignore=ignore).hash != first.hash
    # The ignore list is itself part of the step.
    assert base().add_local_dir(root, "/app", ignore=["*.log"]).hash != first.hash


def test_add_local_dir_and_file_errors(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InvalidError, match="does not exist"):
        base().add_local_file(tmp_path / "missing", "/m")
    with pytest.raises(InvalidError, match="use add_local_dir"):
        base().add_local_file(tmp_path, "/m")
    with pytest.raises(InvalidError, match="does not exist"):
        base().add_local_dir(tmp_path / "missing", "/m")
    with pytest.raises(InvalidError, match="use add_local_file"):
        base().add_local_dir(tmp_path / "f", "/m")
    with pytest.raises(InvalidError, match=r"remote_path='rel/x' is relative.*'/rel/x'"):
        base().add_local_file(tmp_path / "f", "rel/x")
    with pytest.raises(InvalidError, match="callables"):
        base().add_local_dir(tmp_path, "/m", ignore=lambda p: True)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- python source


@pytest.fixture
def importable(tmp_path, monkeypatch):
    """A fresh import root on sys.path, with unique module names per test."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    suffix = uuid.uuid4().hex[:8]
    return root, suffix


def test_add_local_python_source_module_and_package(importable):
    root, suffix = importable
    mod, pkg = f"apothic_testmod_{suffix}", f"apothic_testpkg_{suffix}"
    (root / f"{mod}.py").write_text("X = 1\n")
    (root / pkg).mkdir()
    (root / pkg / "__init__.py").write_text("")
    (root / pkg / "core.py").write_text("Y = 1\n")

    image = base().add_local_python_source(pkg, [mod], pkg)
    step = image.steps[0]
    assert isinstance(step, AddLocalPythonSourceStep)
    assert step.modules == tuple(sorted([mod, pkg]))
    by_name = {s.module: s for s in step.sources}
    assert by_name[mod].local_path == str(root / f"{mod}.py")
    assert by_name[mod].target == f"{mod}.py" and not by_name[mod].is_package
    assert by_name[pkg].local_path == str(root / pkg)
    assert by_name[pkg].target == pkg and by_name[pkg].is_package
    assert base().add_local_python_source(mod, pkg).hash == image.hash

    # __pycache__ does not count; source content does.
    (root / pkg / "__pycache__").mkdir()
    (root / pkg / "__pycache__" / "core.cpython-311.pyc").write_bytes(b"junk")
    assert base().add_local_python_source(mod, pkg).hash == image.hash
    _touch_mtime(root / pkg / "core.py")
    assert base().add_local_python_source(mod, pkg).hash == image.hash
    (root / pkg / "core.py").write_text("Y = 2\n")
    assert base().add_local_python_source(mod, pkg).hash != image.hash
    (root / f"{mod}.py").write_text("X = 2\n")
    edited = base().add_local_python_source(mod)
    assert edited.hash != base().add_local_python_source(pkg).hash


def test_add_local_python_source_submodule(importable):
    root, suffix = importable
    pkg = f"apothic_testsub_{suffix}"
    (root / pkg).mkdir()
    (root / pkg / "__init__.py").write_text("")
    (root / pkg / "util.py").write_text("Z = 1\n")
    source = base().add_local_python_source(f"{pkg}.util").steps[0].sources[0]
    assert source.target == f"{pkg}/util.py"
    assert source.local_path == str(root / pkg / "util.py")


def test_add_local_python_source_reports_every_bad_module_at_once(importable):
    root, suffix = importable
    missing = f"apothic_missing_{suffix}"
    ext = f"apothic_fakeext_{suffix}"
    # find_spec locates an extension module by its suffix without loading it.
    import importlib.machinery

    (root / f"{ext}{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"\x7fELF")
    with pytest.raises(InvalidError) as info:
        base().add_local_python_source(missing, "sys", ext, "my-package")
    message = str(info.value)
    assert "4 problems" in message
    assert f"module {missing!r} was not found" in message
    assert "sys.path or PYTHONPATH" in message
    assert "'sys' is built into the interpreter" in message
    assert f"{ext!r} is a compiled extension" in message and "pip_install" in message
    assert "'my-package' is not a module name" in message


def test_add_local_python_source_missing_parent(importable):
    _, suffix = importable
    with pytest.raises(InvalidError, match=rf"apothic_nopkg_{suffix}\.sub"):
        base().add_local_python_source(f"apothic_nopkg_{suffix}.sub")


# --------------------------------------------------------------------------- validation


def test_package_validation_collects_every_problem():
    with pytest.raises(InvalidError) as info:
        base().pip_install("numpy", "", "   ", None, 3, "-r requirements.txt")
    message = str(info.value)
    assert message.startswith("Image.pip_install(): 5 problems")
    assert "package '' is empty" in message
    assert "package '   ' is empty" in message
    assert "None has type NoneType" in message
    assert "3 has type int" in message
    assert "looks like a command-line option" in message and "index_url=" in message


def test_other_validation_errors():
    with pytest.raises(InvalidError, match="contains whitespace"):
        base().apt_install("git curl")
    with pytest.raises(InvalidError, match=r"index_url='pypi\.org' is not a URL"):
        base().pip_install("x", index_url="pypi.org")
    with pytest.raises(InvalidError, match="pre='yes' must be True or False"):
        base().uv_pip_install("x", pre="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidError, match="name '1BAD' is invalid"):
        base().env({"1BAD": "x"})
    with pytest.raises(InvalidError, match=r"PORT=8080 has type int; .*PORT='8080'"):
        base().env(PORT=8080)  # type: ignore[arg-type]
    with pytest.raises(InvalidError, match="keep one"):
        base().env({"A": "1"}, A="2")
    with pytest.raises(InvalidError, match="relative"):
        base().workdir("app")
    with pytest.raises(InvalidError, match="command '  ' is empty"):
        base().run_commands("echo", "  ")
    with pytest.raises(InvalidError, match="b'x' has type bytes"):
        base().run_commands(b"x")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- to_dict / from_dict


def _full_image(tmp_path, importable_root=None) -> Image:
    (tmp_path / "f.txt").write_text("file")
    (tmp_path / "d").mkdir(exist_ok=True)
    (tmp_path / "d" / "x").write_text("x")
    return (
        base()
        .pip_install("numpy", "pandas", index_url="https://a.example/simple", pre=True)
        .uv_pip_install("torch")
        .apt_install("git")
        .env(B="2", A="1")
        .workdir("/app")
        .run_commands("echo a", "echo b")
        .add_local_file(tmp_path / "f.txt", "/f.txt")
        .add_local_dir(tmp_path / "d", "/d", ignore=["*.tmp"])
    )


def test_to_dict_from_dict_round_trip(tmp_path, importable):
    root, suffix = importable
    mod = f"apothic_rt_{suffix}"
    (root / f"{mod}.py").write_text("")
    image = _full_image(tmp_path).add_local_python_source(mod)
    data = image.to_dict()
    assert json.loads(json.dumps(data)) == data  # JSON-able
    assert data["steps"][3] == {"kind": "env", "vars": {"A": "1", "B": "2"}}
    assert data["steps"][6]["local_path"] == str(tmp_path / "f.txt")

    again = Image.from_dict(json.loads(json.dumps(data)))
    assert again == image
    assert again.hash == image.hash
    assert again.to_dict() == data
    assert repr(again) == repr(image)

    for other in (
        Image.from_registry("ghcr.io/o/a:1", add_python="3.11"),
        Image.debian_slim("3.10"),
    ):
        assert Image.from_dict(json.loads(json.dumps(other.to_dict()))) == other


def test_from_dict_round_trip_of_dockerfile_base(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM python:3.11\nCOPY . /app\n")
    image = Image.from_dockerfile(tmp_path / "Dockerfile", add_python="3.11")
    again = Image.from_dict(json.loads(json.dumps(image.to_dict())))
    assert again == image and again.hash == image.hash


def test_from_dict_rejects_malformed_input():
    good = base().pip_install("numpy").to_dict()
    cases = [
        ({**good, "format": "apothic.image/v999"}, "format"),
        ({**good, "extra": 1}, "unknown field 'extra'"),
        ({**good, "steps": [{"kind": "pip", "packages": ["a"], "color": "red"}]}, "'color'"),
        ({**good, "steps": [{"kind": "teleport"}]}, "'teleport' is not a step kind"),
        ({**good, "steps": [{"kind": "pip", "packages": []}]}, "no packages"),
        ({**good, "steps": [{"kind": "workdir", "path": "rel"}]}, "relative"),
        (
            {
                **good,
                "steps": [
                    {
                        "kind": "add_local_file",
                        "local_path": "/x",
                        "remote_path": "/x",
                        "content_hash": "nothex",
                    }
                ],
            },
            "content_hash",
        ),
        ({**good, "base": {"kind": "debian_slim", "python_version": "2.7"}}, "2.7"),
        (
            {**good, "base": {"kind": "registry", "ref": "python", "python_version": "3.11"}},
            "does not apply",
        ),
        ("not a dict", "expected a dict"),
    ]
    for data, fragment in cases:
        with pytest.raises(InvalidError, match=r"^Image\.from_dict\(\)") as info:
            Image.from_dict(data)  # type: ignore[arg-type]
        assert fragment in str(info.value), (data, str(info.value))


def test_repr_is_readable(tmp_path):
    image = (
        base()
        .uv_pip_install("pandas", "numpy")
        .env(PYTHONUNBUFFERED="1")
        .run_commands("mkdir -p /x")
    )
    assert repr(image) == (
        "Image.debian_slim(python_version='3.11')"
        ".uv_pip_install('numpy', 'pandas')"
        ".env({'PYTHONUNBUFFERED': '1'})"
        ".run_commands('mkdir -p /x')"
    )
    assert repr(Image.from_registry("python:3.11")) == "Image.from_registry('python:3.11')"


# --------------------------------------------------------------------------- across processes


def test_hash_is_stable_across_processes(tmp_path):
    (tmp_path / "f.txt").write_text("file")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    image = _full_image(tmp_path)
    script = textwrap.dedent(
        f"""
        from apothic._image import Image
        image = (
            Image.debian_slim("3.11")
            .pip_install("pandas", "numpy", pre=True, index_url="https://a.example/simple")
            .uv_pip_install(["torch"])
            .apt_install("git", "git")
            .env(A="1", B="2")
            .workdir("/app/")
            .run_commands("echo a", "echo b")
            .add_local_file({str(tmp_path / "f.txt")!r}, "/f.txt")
            .add_local_dir({str(tmp_path / "d")!r}, "/d", ignore=["*.tmp"])
        )
        print(image.hash)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    hashes = set()
    for seed in ("1", "2"):
        env["PYTHONHASHSEED"] = seed
        out = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr
        hashes.add(out.stdout.strip())
    assert hashes == {image.hash}


# --------------------------------------------------------------------------- module layout


def test_image_modules_import_only_the_layers_below_them():
    # Bottom to top; a module may import only those before it, so there are no cycles.
    import ast
    import importlib

    import apothic._image as package

    layers = ["_checks", "_canonical", "_tree", "_base", "_steps", "_sources", "_imports", "_spec"]
    folder = os.path.dirname(package.__file__)
    on_disk = sorted(n[:-3] for n in os.listdir(folder) if n.endswith(".py") and n != "__init__.py")
    assert on_disk == sorted(layers)
    for i, name in enumerate(layers):
        with open(os.path.join(folder, f"{name}.py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        }
        assert imported <= set(layers[:i]), (name, imported - set(layers[:i]))
        importlib.import_module(f"apothic._image.{name}")
    assert all(hasattr(package, n) for n in package.__all__)
