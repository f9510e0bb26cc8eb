"""Loading a user's app file (``apothic deploy app.py``, ``apothic run app.py::fn``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from ..exceptions import InvalidError


def load_app_file(path: str) -> Any:
    """Import a user's app file as a module named after it."""
    p = Path(path).resolve()
    if not p.is_file():
        raise InvalidError(f"{path}: no such file. Fix: give the path of a Python file that defines an App.")
    sys.path.insert(0, str(p.parent))
    name = p.stem
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise InvalidError(f"{path}: cannot be imported as Python.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def apps_in(module: Any) -> list[Any]:
    from .._app import App

    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if not apps:
        raise InvalidError(f"{module.__file__} defines no apothic.App. Fix: add `app = apothic.App('name')`.")
    return apps
