"""The image specification: immutable steps with a stable content hash.

Modules, from the bottom up (each imports only those before it):

* ``_checks``: argument checks that collect every problem of a definition;
* ``_canonical``: the canonical JSON form of a spec and its content hash (the hashing rules);
* ``_tree``: the walk and content hash of local files and directories, and ``ignore=``;
* ``_base``: :class:`ImageBase`, the registry reference grammar, Dockerfile context use;
* ``_steps``: the step dataclasses and their normalisation;
* ``_sources``: resolving module names for ``add_local_python_source``;
* ``_spec``: :class:`Image`, its constructors and step methods.

This module re-exports what the rest of Apothic uses.
"""

from ._checks import SUPPORTED_PYTHON_VERSIONS
from ._spec import Image
from ._steps import (
    AddLocalDirStep,
    AddLocalFileStep,
    AddLocalPythonSourceStep,
    AptInstallStep,
    EnvStep,
    PipInstallStep,
    RunCommandsStep,
    UvPipInstallStep,
    WorkdirStep,
)
from ._tree import PYTHON_SOURCE_EXCLUDES, hash_tree, walk_tree

__all__ = [
    "PYTHON_SOURCE_EXCLUDES",
    "SUPPORTED_PYTHON_VERSIONS",
    "AddLocalDirStep",
    "AddLocalFileStep",
    "AddLocalPythonSourceStep",
    "AptInstallStep",
    "EnvStep",
    "Image",
    "PipInstallStep",
    "RunCommandsStep",
    "UvPipInstallStep",
    "WorkdirStep",
    "hash_tree",
    "walk_tree",
]
