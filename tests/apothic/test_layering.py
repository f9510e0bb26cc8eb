"""The layering holds when the code runs: each import, in a fresh interpreter, loads only
what its layer may use (a source scan alone misses imports made at run time)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

IO_CLIENTS = {"httpx", "docker", "boto3", "botocore", "requests", "urllib3"}
BACKEND = ("apothic.workflows", "apothic.activities", "apothic.worker", "apothic.vastsim")


def loaded_after(code: str) -> set[str]:
    """The modules in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def tops(mods: set[str]) -> set[str]:
    return {m.split(".")[0] for m in mods}


def test_import_apothic_loads_neither_temporal_nor_io_clients() -> None:
    mods = loaded_after("import apothic")
    assert not tops(mods) & ({"temporalio", "pydantic", "cloudpickle", "yaml"} | IO_CLIENTS), sorted(tops(mods))
    assert {m for m in mods if m.startswith("apothic.")} == set(), sorted(m for m in mods if m.startswith("apothic"))


@pytest.mark.parametrize("code", ["import apothic.placement", "from apothic.placement import choose, placement_query"])
def test_placement_is_pure_at_run_time(code: str) -> None:
    mods = loaded_after(code)
    assert not tops(mods) & ({"temporalio", "pydantic", "cloudpickle"} | IO_CLIENTS), sorted(tops(mods))
    # Nothing of the SDK beyond the package's own (lazy) __init__.
    assert {m for m in mods if m.startswith("apothic.") and not m.startswith("apothic.placement")} == set()


@pytest.mark.parametrize(
    "code",
    [
        "from apothic import App, Image, Retries, Cron, Job, RemoteFunction",
        "import apothic.runtime._runtime",
        "from apothic._cli import main",
    ],
)
def test_the_sdk_and_runtime_never_load_the_backend(code: str) -> None:
    mods = loaded_after(code)
    assert not {m for m in mods if m.startswith(BACKEND)}, sorted(m for m in mods if m.startswith(BACKEND))
    # The I/O clients of the providers and the blob store load only where they are used.
    assert not tops(mods) & IO_CLIENTS, sorted(tops(mods) & IO_CLIENTS)


def test_every_public_name_resolves_lazily() -> None:
    import apothic

    for name in apothic.__all__:
        assert getattr(apothic, name) is not None, name
    assert set(apothic.__all__) <= set(dir(apothic))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        apothic.nope  # noqa: B018
