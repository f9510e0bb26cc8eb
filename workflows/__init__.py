"""Apothic's workflows: deterministic orchestration, no I/O.

Imports only Temporal's workflow API and the shared contracts (``apothic._contracts``).
"""

from ._app import AppWorkflow
from ._container import ContainerWorkflow
from ._fleet import FleetWorkflow
from ._invocation import InvocationWorkflow
from ._map import MapWorkflow

ALL_WORKFLOWS = [AppWorkflow, ContainerWorkflow, FleetWorkflow, InvocationWorkflow, MapWorkflow]

__all__ = ["ALL_WORKFLOWS", "AppWorkflow", "ContainerWorkflow", "FleetWorkflow", "InvocationWorkflow", "MapWorkflow"]
