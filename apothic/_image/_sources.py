"""Resolving module names to the local sources ``add_local_python_source`` copies in."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os

from ._checks import MODULE_NAME
from ._steps import PythonSource

__all__ = ["python_source_for"]


def python_source_for(name: str) -> tuple[PythonSource | None, str | None]:
    """Resolve one module name to a PythonSource, or return a problem message."""
    if not isinstance(name, str) or not MODULE_NAME.fullmatch(name):
        return None, (
            f"{name!r} is not a module name; pass the import name, e.g. 'my_package' "
            "(underscores, not dashes)"
        )
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as e:
        spec, err = None, e
    except Exception as e:  # importing a parent package ran user code that failed
        return None, f"module {name!r}: importing its parent package failed: {e!r}"
    else:
        err = None
    if spec is None:
        detail = f" ({err})" if err else ""
        return None, (
            f"module {name!r} was not found{detail}; install it, or add the directory that "
            "contains it to sys.path or PYTHONPATH"
        )
    origin = spec.origin
    locations = list(spec.submodule_search_locations or [])
    target = name.replace(".", "/")
    if spec.submodule_search_locations is not None:  # a package
        if origin and os.path.basename(origin).startswith("__init__."):
            if not origin.endswith(".py"):
                return None, (
                    f"package {name!r} has a compiled __init__ ({origin}); only pure-Python "
                    "sources can be added; install it with pip_install(...) instead"
                )
            path = os.path.dirname(origin)
        elif len(locations) == 1:  # namespace package in one directory
            path = locations[0]
        else:
            return None, (
                f"{name!r} is a namespace package spread over {len(locations)} directories "
                f"({', '.join(locations)}); add its subpackages one by one, or use add_local_dir"
            )
        if not os.path.isdir(path):
            return None, f"package {name!r} resolves to {path!r}, which is not a directory"
        return PythonSource(name, path, target, True, ""), None
    if origin in (None, "built-in", "frozen") or not spec.has_location:
        return None, (
            f"module {name!r} is built into the interpreter; it has no source to add and is "
            "already available wherever that Python runs"
        )
    if origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
        return None, (
            f"module {name!r} is a compiled extension ({origin}); only pure-Python sources can "
            "be added; install it with pip_install(...) instead"
        )
    if not origin.endswith((".py", ".pyw")) or not os.path.isfile(origin):
        return None, (
            f"module {name!r} has no source file on disk (found {origin!r}); only .py files "
            "and packages of them can be added"
        )
    return PythonSource(name, origin, target + ".py", False, ""), None
