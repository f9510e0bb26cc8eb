"""Apothic's activities: all I/O of the control plane lives here.

Each takes one contract dataclass and returns one; long ones heartbeat. Errors carry a
stable ``type`` (``NotFound``, ``ContainerExited``, ...).
"""

from ._control import ControlActivities

__all__ = ["ControlActivities"]
