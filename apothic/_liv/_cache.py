"""The generations kept on the control plane's host: one JSON file per key.

``$APOTHIC_HOME/liv/account/<key>.json`` (cache ``"account"``: every app of this control plane)
or ``$APOTHIC_HOME/liv/apps/<app>/<key>.json`` (cache ``"app"``), written by the control worker
(``apothic.liv_store``) into a temporary file that is renamed over the entry, so a reader sees a
whole entry or none. The key digests the stub's source and docstring, the examples,
``self_debug`` and the model. An entry that cannot be read counts as missing (the function is
generated again and the entry rewritten).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from pathlib import Path

from .._contracts import LivRecord
from .._control._config import apothic_home

_KEY = re.compile(r"^[0-9a-f]{64}$")


def entry_path(scope: str, app: str, key: str) -> Path:
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a cache key: {key!r}")
    root = apothic_home() / "liv"
    return (root / "account" if scope == "account" else root / "apps" / app) / f"{key}.json"


def read_entry(scope: str, app: str, key: str) -> LivRecord | None:
    if scope == "none":
        return None
    try:
        data = json.loads(entry_path(scope, app, key).read_text(encoding="utf-8"))
        names = {f.name for f in dataclasses.fields(LivRecord)}
        return LivRecord(**{k: v for k, v in data.items() if k in names})
    except (OSError, ValueError, TypeError):
        return None


def write_entry(scope: str, app: str, record: LivRecord) -> Path | None:
    if scope == "none":
        return None
    path = entry_path(scope, app, record.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(record), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
