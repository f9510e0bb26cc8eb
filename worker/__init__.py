"""The control worker: hosts every workflow and the control activities.

Stateless: run one or many, kill any at any time; workflows continue on the others (or when
one is back). Limit: the ``process`` containers a worker started die with it, so an input
running in one fails (``ContainerLost``) unless the function has retries.
``python -m apothic.worker`` or ``apothic worker`` runs one.
"""

from ._worker import build_worker, ensure_search_attributes, run_worker

__all__ = ["build_worker", "ensure_search_attributes", "run_worker"]
