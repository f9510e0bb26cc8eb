"""Fixtures of the workflow tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._cluster import Cluster


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    monkeypatch.setenv("APOTHIC_HOME", str(tmp_path))  # this process is of the cluster too (one payload key)
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()
