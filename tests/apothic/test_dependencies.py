"""The Temporal SDK is used through its public API only, at the minor version it is tested with.

Job events rest on the experimental ``temporalio.contrib.workflow_streams``; its private
modules may change in any release, so no module of ours imports them and pyproject.toml pins
the minor version."""

from __future__ import annotations

import ast
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
SKIP = {".venv", ".git", "build", "dist", "node_modules", "__pycache__"}


def _private(dotted: str) -> bool:
    return any(part.startswith("_") and not (part.startswith("__") and part.endswith("__")) for part in dotted.split("."))


def private_temporal_uses(source: str) -> list[str]:
    """``line: what`` for each import of a private temporalio module or name in ``source``, and
    each private attribute read from a name imported from temporalio (``workflow._x``)."""
    tree = ast.parse(source)
    bound: set[str] = set()  # local names bound to temporalio modules or objects
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "temporalio":
                    bound.add((alias.asname or alias.name).split(".")[0])
                    if _private(alias.name):
                        found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "temporalio":
            for alias in node.names:
                bound.add(alias.asname or alias.name)
                if _private(node.module or "") or _private(alias.name):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def our_sources() -> list[Path]:
    return [p for p in ROOT.rglob("*.py") if not SKIP & set(p.relative_to(ROOT).parts)]


def test_the_scan_finds_private_temporal_names() -> None:
    bad = (
        "from temporalio.contrib.workflow_streams._types import _decode_payload\n"
        "from temporalio.worker import _workflow_instance\n"
        "import temporalio.bridge._visitor as v\n"
        "from temporalio import workflow\n"
        "workflow._Runtime.current()\n"
    )
    assert [line.split(":")[0] for line in private_temporal_uses(bad)] == ["1", "2", "3", "5"]
    good = "from temporalio.contrib.workflow_streams import PollResult\nimport temporalio.client\nx.__name__\n"
    assert private_temporal_uses(good) == []


def test_no_module_of_ours_uses_a_private_temporal_name() -> None:
    sources = our_sources()
    assert len(sources) > 50 and ROOT / "apothic" / "_invoke" / "_watch.py" in sources
    found = {str(p.relative_to(ROOT)): uses for p in sources if (uses := private_temporal_uses(p.read_text()))}
    assert found == {}, f"use the public API (or a small equivalent of our own) instead: {found}"


def test_the_installed_temporalio_is_inside_the_pinned_minor_version() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [Requirement(d) for d in deps if Requirement(d).name == "temporalio"]
    assert len(pins) == 1, deps
    spec = pins[0].specifier
    installed = Version(version("temporalio"))
    assert installed in spec, f"temporalio {installed} is installed, pyproject.toml pins {spec}"
    # The pin admits one minor version: the next minor release is outside it.
    lower = min(Version(s.version) for s in spec if s.operator == ">=")
    assert Version(f"{lower.major}.{lower.minor + 1}") not in spec, f"pin the minor version: {spec}"
