"""The canonical form of an image spec and its content hash.

Hashing rules, chosen so that the hash is a good cache key:

* Within one install step, packages are de-duplicated and sorted, so
  ``pip_install("b", "a")`` and ``pip_install("a", "b", "a")`` are the same step. The order
  of *steps* is kept: ``pip_install("a").apt_install("b")`` differs from the reverse.
* Environment variables are sorted by key; remote paths are normalised POSIX paths.
* Local files, directories and Python sources are hashed by *content* (bytes, relative
  layout, executable bit), never by modification time. Hashing happens once, when the
  step is defined: every byte is read through SHA-256, so adding a large directory costs
  one full read of it (narrow it with ``ignore=``). Edits made after the step was defined
  are not seen by that image; define it again to pick them up.
* The absolute local path of an added file or directory is recorded (the builder needs it)
  but is not part of the hash: the same content copied to the same remote path gives the
  same image on every machine and in every checkout.
* The hash is SHA-256 over canonical JSON (sorted keys) of :meth:`Image.to_dict` minus the
  local paths, so it is the same across processes, machines and Python versions. Python's
  ``hash()`` is never involved.

Limits: a registry tag (``python:3.11-slim``) is hashed as written; when the registry moves
the tag, the hash does not change. Pin ``@sha256:...`` when that matters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from typing import Any

__all__ = ["FORMAT", "LOCAL_ONLY", "canonical_form", "form_hash", "to_json"]

FORMAT = "apothic.image/v1"

# Field metadata: {"hash": False} keeps a field out of the hash (still in to_dict);
# {"json": "mapping"} serialises a tuple of (key, value) pairs as a JSON object.
LOCAL_ONLY = {"hash": False}


def to_json(obj: Any, for_hash: bool) -> dict[str, Any]:
    """One base, step or python source as a JSON-able dict, ``kind`` first when it has one."""
    out: dict[str, Any] = {}
    kind = getattr(type(obj), "kind", None)
    if isinstance(kind, str):  # steps carry kind as a class attribute
        out["kind"] = kind
    for f in dataclasses.fields(obj):
        if for_hash and not f.metadata.get("hash", True):
            continue
        value = getattr(obj, f.name)
        if value is None:
            continue  # absent optional fields keep old hashes stable when fields are added
        if f.metadata.get("json") == "mapping":
            value = {k: v for k, v in value}
        elif isinstance(value, tuple):
            value = [to_json(v, for_hash) if dataclasses.is_dataclass(v) else v for v in value]
        out[f.name] = value
    return out


def canonical_form(base: Any, steps: Iterable[Any], *, for_hash: bool) -> dict[str, Any]:
    """The JSON-able form of an image; ``for_hash`` leaves out the local-only fields."""
    return {
        "format": FORMAT,
        "base": to_json(base, for_hash=for_hash),
        "steps": [to_json(s, for_hash=for_hash) for s in steps],
    }


def form_hash(form: dict[str, Any]) -> str:
    """Hex SHA-256 of a canonical form as compact, key-sorted, ASCII JSON."""
    text = json.dumps(form, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()
