"""The public surface is frozen: names, and the packages' import rules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import apothic

ROOT = Path(__file__).resolve().parents[2]

PUBLIC = [
    "ApothicError", "App", "AppDeployment", "CallTimeoutError", "CloudBucketMount", "ControlPlaneClient", "Cron",
    "Function", "FunctionTimeoutError", "Image", "InvalidError", "Job", "JobCancelledError", "JobEvent", "JobStatus",
    "LivConfig",
    "NotFoundError", "NotSupportedError", "Period", "PlacementError", "RemoteError", "RemoteFunction", "Retries",
    "Secret", "StorageMount", "Volume", "batched", "checkpoint", "concurrent", "last_checkpoint", "liv",
]


def test_public_names_are_frozen_and_sorted() -> None:
    assert apothic.__all__ == sorted(apothic.__all__)
    assert apothic.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(apothic, name) is not None


def test_job_and_function_surfaces() -> None:
    for name in ("status", "logs", "wait", "cancel", "watch"):
        assert callable(getattr(apothic.Job, name))
    for name in ("remote", "spawn", "remote_gen", "remote_events", "spawn_map", "map", "starmap", "for_each"):
        assert callable(getattr(apothic.RemoteFunction, name))
        assert callable(getattr(apothic.Function, name))


def imported_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(out.split())


def test_the_sdk_never_imports_the_backend_packages() -> None:
    mods = imported_after("import apothic")
    assert not {m for m in mods if m.startswith(("apothic.workflows", "apothic.activities", "apothic.worker"))}


def imports_of(folder: str, exclude: str = "") -> set[str]:
    """Every module a package's files import (statically, from their source)."""
    names: set[str] = set()
    for path in (ROOT / folder).rglob("*.py"):
        if exclude and (ROOT / exclude) in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return names


def test_placement_is_pure() -> None:
    pure = {n.split(".")[0] for n in imports_of("placement", exclude="placement/providers")}
    providers = {n.split(".")[0] for n in imports_of("placement/providers")}
    assert not pure & {"temporalio", "httpx", "docker", "boto3", "pydantic", "cloudpickle", "apothic"}, pure
    # Providers talk to their backends but not to Temporal.
    assert "temporalio" not in providers


def test_workflows_import_only_temporal_and_the_contracts() -> None:
    allowed_apothic = {"apothic._contracts", "apothic._data._serialization"}
    for name in imports_of("workflows"):
        top = name.split(".")[0]
        assert top in {"temporalio", "apothic", "__future__", "asyncio", "math", "datetime", "dataclasses", "typing", "collections"}, name
        if top == "apothic":
            assert name in allowed_apothic, name
