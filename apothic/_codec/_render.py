"""Readable payloads: Apothic's JSON control data with each pickled value shown as text.

Apothic's payloads are JSON (``json/plain``): frozen dataclasses whose user values are
:class:`~apothic._data._serialization.CloudPickled` envelopes (base64 cloudpickle plus
``kind``, ``qualname``, ``size``, ``sha256``, ``py``, ``blob``). :func:`decode_payload` keeps the
JSON structure and replaces each envelope by its rendering::

    {"cloudpickle": "result", "type": "dict", "size": 61, "sha256": "…", "value": {"sum": 3}}
    {"cloudpickle": "args", "function": "shop.total", "size": 80, "sha256": "…",
     "args": [[1, 2]], "kwargs": {"tax": 0.2}}
    {"cloudpickle": "result", "type": "bytes", "size": 52428800, "sha256": "…",
     "blob": {"driver": "…", "key": "v0/d/sha256/…"}, "note": "in the blob store: not read here"}
    {"cloudpickle": "result", "type": "mylib.Point", "size": 90, "sha256": "…",
     "not_loaded": "its type mylib.Point is defined in the user's module 'mylib', …"}

The value is unpickled by :mod:`._values` (no import of the user's modules, none of the
value's own methods run) and shown as JSON where it allows, else by its fields or a bounded
``repr``; app code (``kind="code"``) is never unpickled. Payloads Apothic nests inside others
(a workflow stream's items) are rendered the same way. Anything else passes unchanged.

Only a payload signed with this control plane's key (``apothic/_data/_signing.py``) has its
values unpickled: that is what makes them the user's own, not whatever someone sent the
server. An unsigned one (a signal typed into the UI), one signed with another key, or any
payload when the server has no key, shows its structure and each value's type and size with
a ``not_loaded`` note saying why. The signature entry itself is left out of the answer.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Callable
from typing import Any

from temporalio.api.common.v1 import Payload

from .._data._serialization import PY_VERSION, CloudPickled
from .._data._signing import SIGNATURE
from ._values import NotLoadable, guarded_loads, to_json, type_name

_PICKLED_FIELDS = frozenset(f.name for f in dataclasses.fields(CloudPickled))
_PICKLED_REQUIRED = frozenset({"data", "kind", "size", "sha256", "py"})
JSON_ENCODING = b"json/plain"


def is_pickled(node: Any) -> bool:
    """Whether a JSON object is a ``CloudPickled`` envelope."""
    return type(node) is dict and _PICKLED_REQUIRED <= node.keys() <= _PICKLED_FIELDS and isinstance(node["data"], str)


def render_pickled(node: dict[str, Any], untrusted: str = "") -> dict[str, Any]:
    """The readable form of one ``CloudPickled`` envelope (see the module docstring);
    ``untrusted``: why its value must not be unpickled ("": it may)."""
    kind = str(node.get("kind") or "value")
    qualname = str(node.get("qualname") or "")
    out: dict[str, Any] = {"cloudpickle": kind}
    if kind == "args":
        out["function"] = qualname
    else:
        out["type"] = qualname
    out["size"] = node.get("size")
    out["sha256"] = node.get("sha256")
    blob = node.get("blob")
    if blob:
        out["blob"] = {k: v for k, v in blob.items() if k in ("driver", "key")} if isinstance(blob, dict) else blob
        out["note"] = "in the blob store: not read by the codec server"
        return out
    if kind == "code":
        out["note"] = "the app's code: the codec server does not unpickle code"
        return out
    if untrusted:
        out["not_loaded"] = f"not unpickled: {untrusted}"
        return out
    py = str(node.get("py") or "")
    if py and py != PY_VERSION:
        out["not_loaded"] = (
            f"pickled by Python {py}; the codec server runs Python {PY_VERSION} and pickles do not cross "
            "Python versions (run the codec server with the client's Python to see the value)"
        )
        return out
    try:
        raw = base64.b64decode(node["data"], validate=True)
        value = guarded_loads(raw)
    except NotLoadable as e:
        out["not_loaded"] = str(e)
        return out
    except (binascii.Error, ValueError) as e:
        out["not_loaded"] = f"not a valid pickle ({e})"
        return out
    except Exception as e:  # noqa: BLE001 - whatever unpickling raised, said in the rendering
        out["not_loaded"] = f"unpickling failed in the codec server: {type(e).__name__}: {str(e)[:500]}"
        return out
    if kind == "args" and _is_call(value):
        args, cut_a = to_json(list(value[0]))
        kwargs, cut_k = to_json(dict(value[1]))
        out["args"], out["kwargs"] = args, kwargs
        cut = cut_a or cut_k
    else:
        if kind != "args":
            out["type"] = type_name(value)
        out["value"], cut = to_json(value)
    if cut:
        out["truncated"] = "parts of the value were left out to keep this rendering small"
    return out


def _is_call(value: Any) -> bool:
    return (type(value) is tuple and len(value) == 2 and type(value[0]) in (tuple, list)
            and type(value[1]) is dict and all(type(k) is str for k in value[1]))


def render_tree(node: Any, untrusted: str = "") -> Any:
    """A JSON value with every envelope (and every payload nested in it) rendered."""
    if type(node) is dict:
        if is_pickled(node):
            return render_pickled(node, untrusted)
        nested = _nested_payload(node, untrusted)
        if nested is not None:
            return nested
        return {k: render_tree(v, untrusted) for k, v in node.items()}
    if type(node) is list:
        return [render_tree(v, untrusted) for v in node]
    return node


def _nested_payload(node: dict[str, Any], untrusted: str) -> Any:
    """A payload carried as JSON inside another (``{"metadata": {...}, "data": base64}``, as a
    workflow stream holds its items): its JSON value, rendered; None if it is not one."""
    metadata, data = node.get("metadata"), node.get("data")
    if node.keys() != {"metadata", "data"} or type(metadata) is not dict or not isinstance(data, str):
        return None
    try:
        encoding = base64.b64decode(str(metadata.get("encoding", "")), validate=True)
        if encoding != JSON_ENCODING:
            return None
        return render_tree(json.loads(base64.b64decode(data, validate=True)), untrusted)
    except (binascii.Error, ValueError):
        return None


NO_KEY = (
    "this codec server has no payload key, so it cannot tell this control plane's payloads from anyone's. "
    "Fix: run it with the control plane's key (the same APOTHIC_HOME, or APOTHIC_PAYLOAD_KEY_FILE)"
)


def trust(payload: Payload, verify: Callable[[Payload], Payload] | None) -> tuple[Payload, str]:
    """``payload`` without its signature, and why its values must not be unpickled ("": they
    may). ``verify``: the signing codec's check (None: no key here)."""
    if verify is None:
        return payload, NO_KEY
    try:
        return verify(payload), ""
    except Exception:  # noqa: BLE001 - a refusal of any kind: shown, never unpickled
        if SIGNATURE not in payload.metadata:
            why = "the payload is not signed (it did not come from a process of this control plane)"
        else:
            why = "the payload's signature does not match this control plane's key"
        return payload, why


def decode_payload(payload: Payload, verify: Callable[[Payload], Payload] | None = None, *,
                   trusted: bool = False) -> Payload:
    """``payload`` made readable: a JSON payload with its envelopes rendered; any other payload
    unchanged. The signature entry is left out. Values are unpickled only from a payload that
    ``verify`` (the signing codec's check) accepts, or with ``trusted``."""
    if trusted:
        untrusted = ""
    else:
        payload, untrusted = trust(payload, verify)
    metadata = {k: v for k, v in payload.metadata.items() if k != SIGNATURE}
    data = payload.data
    if metadata.get("encoding") == JSON_ENCODING:
        try:
            tree = json.loads(data)
        except ValueError:
            tree = None
        else:
            rendered = render_tree(tree, untrusted)
            if rendered != tree:
                data = json.dumps(rendered, ensure_ascii=False).encode()
    return Payload(metadata=metadata, data=data)
