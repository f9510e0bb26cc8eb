"""``with image.imports():``: imports that exist only inside a function's image.

::

    image = apothic.Image.debian_slim().pip_install("numpy")

    with image.imports():
        import numpy as np

    @app.function(image=image)
    def total(xs: list[float]) -> float:
        return float(np.sum(xs))

On the caller's machine (``apothic.is_local()``) an ``ImportError`` inside the block is
swallowed, and every name the block's import statements would have bound and did not is bound
to a placeholder instead. The placeholder pickles as "import this module" (or "this attribute
of this module"), so a function that uses the name, shipped by value to its container, finds
the real module there; used here, it raises an error that names the module and the fix.
Inside a function container the block is an ordinary block: its errors are raised.

The names come from the ``with`` statement's source (the file and line of the caller): the
block holds import statements; anything after the first failing import does not run locally.
"""

from __future__ import annotations

import ast
import importlib
import linecache
import sys
from types import FrameType, TracebackType
from typing import Any

from ..exceptions import InvalidError


def _load(module: str, attribute: str) -> Any:
    """What a placeholder becomes when unpickled (in the function's container)."""
    loaded = importlib.import_module(module)
    if not attribute:
        return loaded
    try:
        return getattr(loaded, attribute)
    except AttributeError:
        return importlib.import_module(f"{module}.{attribute}")  # `from pkg import submodule`


class ImageOnly:
    """A name whose import exists only inside a function's image (``image.imports()``)."""

    def __init__(self, module: str, attribute: str, error: str) -> None:
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_attribute", attribute)
        object.__setattr__(self, "_error", error)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return _load, (object.__getattribute__(self, "_module"), object.__getattribute__(self, "_attribute"))

    def _what(self) -> str:
        module, attribute = object.__getattribute__(self, "_module"), object.__getattribute__(self, "_attribute")
        return f"{module}.{attribute}" if attribute else module

    def __getattr__(self, name: str) -> Any:
        raise InvalidError(
            f"{self._what()} is imported only inside the function's image (`with image.imports():`), and "
            f"here it failed: {object.__getattribute__(self, '_error')}. Fix: use it inside a function that "
            "runs remotely (`fn.remote(...)`), or install it here too."
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__getattr__("__call__")

    def __repr__(self) -> str:
        return f"<{self._what()}: only inside the function's image>"


def _import_names(frame: FrameType, line: int) -> list[tuple[str, str, str]]:
    """``(bound name, module, attribute)`` for each import in the ``with`` block at ``line``
    of the frame's file (read from its source)."""
    filename = frame.f_code.co_filename
    source = "".join(linecache.getlines(filename, frame.f_globals))
    if not source:
        return []
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[tuple[str, str, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.With, ast.AsyncWith)) or node.lineno != line:
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.Import):
                for alias in stmt.names:
                    if alias.asname:
                        names.append((alias.asname, alias.name, ""))
                    else:  # `import a.b` binds `a`
                        top = alias.name.split(".")[0]
                        names.append((top, top, ""))
            elif isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module:
                for alias in stmt.names:
                    if alias.name != "*":
                        names.append((alias.asname or alias.name, stmt.module, alias.name))
        break
    return names


class ImageImports:
    """What :meth:`Image.imports` returns: a context manager for the image's imports."""

    def __init__(self, image: Any) -> None:
        self.image = image
        self._frame: FrameType | None = None
        self._line = 0

    def __enter__(self) -> ImageImports:
        self._frame = sys._getframe(1)
        self._line = self._frame.f_lineno  # the `with` statement's line
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        from .._invoke._context import is_local

        frame, self._frame = self._frame, None
        if exc is None or not isinstance(exc, ImportError) or not is_local():
            return False
        if frame is not None and frame.f_globals is frame.f_locals:  # module level: bind placeholders
            error = f"{type(exc).__name__}: {exc}"
            for name, module, attribute in _import_names(frame, self._line):
                if name not in frame.f_globals:
                    frame.f_globals[name] = ImageOnly(module, attribute, error)
        return True  # the import is the image's, not this machine's
