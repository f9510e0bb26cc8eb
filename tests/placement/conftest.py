"""Make ``apothic.placement`` importable from the checkout when the package is not installed."""

import importlib
import importlib.util
import sys
from pathlib import Path

try:
    importlib.import_module("apothic.placement")
except Exception:  # not installed yet, or the rest of `apothic` is mid-edit: load only placement
    for _name in [n for n in sys.modules if n == "apothic.placement" or n.startswith("apothic.placement.")]:
        del sys.modules[_name]
    _pkg = Path(__file__).resolve().parents[2] / "placement"
    _spec = importlib.util.spec_from_file_location(
        "apothic.placement", _pkg / "__init__.py", submodule_search_locations=[str(_pkg)]
    )
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["apothic.placement"] = _module
    _spec.loader.exec_module(_module)
