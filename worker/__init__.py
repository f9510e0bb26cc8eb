"""The control worker: hosts every workflow and the control activities.

Stateless: run one or many, kill any at any time; workflows continue on the others (or when
one is back). The containers a worker started keep running without it: the next attempt of
their ``run_container`` activity, on any worker, adopts them.
``python -m apothic.worker`` or ``apothic worker`` runs one.
"""

from ._worker import build_worker, ensure_search_attributes, run_worker

__all__ = ["build_worker", "ensure_search_attributes", "run_worker"]
