"""Deployed code: a function pickled by value, with its file names and source lines.

cloudpickle replaces the file name of every code object it pickles by value with
``<dynamic-code>`` (to make its pickles independent of where the code lives). A traceback
raised in the function's container would then name no file and show no line. Here the
pickler keeps each code object's ``co_filename`` and the deploy ships the source lines of the
code it pickles (the lines of those functions, from the user's own files only, at most
``SOURCE_LIMIT_BYTES``; other lines stay blank), which the container registers in
:mod:`linecache`: a traceback formatted there shows the user's file names, line numbers and
lines even where the files do not exist (a Docker container, a rented machine).
"""

from __future__ import annotations

import dataclasses
import io
import linecache
import os
import pickle
import sysconfig
import types
import zlib
from collections.abc import Callable
from typing import Any

import cloudpickle

from ._serialization import CloudPickled

# Source lines shipped with one function, before compression; a file whose lines do not fit
# is left out (its frames then show file name and line number but no line).
SOURCE_LIMIT_BYTES = 256 * 1024


@dataclasses.dataclass(frozen=True)
class UserCode:
    """What a deployed function's ``CloudPickled`` (kind ``code``) holds.

    Attributes:
        function: the cloudpickle of the function (its code objects keep their file names).
        sources: file name → zlib-compressed UTF-8 text of that file as it was at deploy, with
            only the lines of the pickled code (the others blank, so line numbers hold).
    """

    function: bytes
    sources: dict[str, bytes] = dataclasses.field(default_factory=dict)

    def load(self) -> Callable[..., Any]:
        """Register the sources in :mod:`linecache`, then unpickle the function."""
        register_sources({name: zlib.decompress(data).decode("utf-8", "replace") for name, data in self.sources.items()})
        return cloudpickle.loads(self.function)


def register_sources(sources: dict[str, str]) -> None:
    """Make :mod:`linecache` (and so every traceback) read these files' lines from here.

    An entry without a modification time is never checked against the disk, so it holds
    even where a file of that name exists with other content.
    """
    for filename, text in sources.items():
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        linecache.cache[filename] = (len(text), None, lines, filename)


def dump_code(fn: Callable[..., Any]) -> CloudPickled:
    """Pickle ``fn`` (by value where cloudpickle does so) with the source lines of its code."""
    buffer = io.BytesIO()
    pickler = _CodePickler(buffer)
    pickler.dump(fn)
    first = getattr(getattr(fn, "__code__", None), "co_filename", "")
    code = UserCode(function=buffer.getvalue(), sources=_read_sources(first, pickler.lines))
    raw = pickle.dumps(code, protocol=5)
    return CloudPickled.from_bytes(raw, kind="code", qualname=str(getattr(fn, "__qualname__", fn))[:200])


def load_code(code: CloudPickled) -> Callable[..., Any]:
    """The deployed function; its sources are registered in :mod:`linecache` first.

    Code deployed before sources were shipped unpickles to the function itself.
    """
    value = code.load()
    return value.load() if isinstance(value, UserCode) else value


def _read_sources(first: str, spans: dict[str, set[tuple[int, int]]]) -> dict[str, bytes]:
    """Each file's lines in ``spans`` (first and last line of each pickled code object): the
    function's own file first, then the others by name, while they fit in
    ``SOURCE_LIMIT_BYTES`` together. Lines outside the spans are left blank."""
    sources: dict[str, bytes] = {}
    room = SOURCE_LIMIT_BYTES
    for filename in sorted(spans, key=lambda name: (name != first, name)):
        if _installed(filename):
            continue
        linecache.checkcache(filename)
        lines = linecache.getlines(filename)
        keep = {n for a, b in spans[filename] for n in range(a, min(b, len(lines)) + 1)}
        if not keep:
            continue
        size = sum(len(lines[n - 1].encode("utf-8")) for n in keep)
        if size > room:
            continue
        room -= size
        text = "".join(line if n in keep else "\n" for n, line in enumerate(lines[: max(keep)], 1))
        sources[filename] = zlib.compress(text.encode("utf-8"), 6)
    return sources


def _installed(filename: str) -> bool:
    """Whether a file belongs to Python, an installed package or Apothic (never shipped)."""
    if not os.path.isabs(filename):
        return False  # "<stdin>", a notebook cell: only linecache knows its lines
    path = os.path.realpath(filename)
    paths = sysconfig.get_paths()
    roots = [os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths]
    roots.append(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))  # the apothic package
    parts = path.split(os.sep)
    return "site-packages" in parts or "dist-packages" in parts or any(path.startswith(r + os.sep) for r in roots)


try:  # cloudpickle's reducer for code objects (private; without it file names are lost)
    from cloudpickle.cloudpickle import _code_reduce as _cloudpickle_code_reduce
except ImportError:  # pragma: no cover - another cloudpickle layout
    _cloudpickle_code_reduce = None


class _CodePickler(cloudpickle.Pickler):
    """cloudpickle's pickler, except that code objects keep their ``co_filename``; it
    collects, per file, the first and last line of each code object it pickles in ``lines``."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=5)
        self.lines: dict[str, set[tuple[int, int]]] = {}
        # One string object per file name: pickled once, then referenced (a stable payload).
        self._names: dict[str, str] = {}

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.CodeType and _cloudpickle_code_reduce is not None:
            return self._reduce_code(obj)
        return super().reducer_override(obj)

    def _reduce_code(self, code: types.CodeType) -> Any:
        rebuild, args = _cloudpickle_code_reduce(code)
        filename = code.co_filename
        if not filename:
            return rebuild, args
        name = self._names.setdefault(filename, "".join(filename))
        # The last line any instruction spans (a multi-line expression ends below its start).
        last = max((end for _, end, _, _ in code.co_positions() if end is not None), default=code.co_firstlineno)
        self.lines.setdefault(filename, set()).add((code.co_firstlineno, max(last, code.co_firstlineno)))
        return rebuild, tuple(name if isinstance(a, str) and a == "<dynamic-code>" else a for a in args)
