"""A simulator of the Vast.ai REST API whose instances are real local processes or containers.

Start one from Python with :class:`Simulator` (a context manager), or from a shell with
``python -m apothic.vastsim --port 8765``. Point a Vast client at it with ``VAST_URL`` and
``VAST_API_KEY``. Faults (offer taken, 429 bursts, stuck loading, dead host, lost create
answer, ignored filter) are injected through :class:`Simulator` methods or ``POST /_sim/faults``.
The facts it follows are those of the project's ``vast-api.md`` reference.
"""

from ._catalogue import build_catalogue
from ._runners import MARKER_ENV, docker_available, marked_pids
from ._server import Simulator

__all__ = ["MARKER_ENV", "Simulator", "build_catalogue", "docker_available", "marked_pids"]
