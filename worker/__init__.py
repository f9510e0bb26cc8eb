"""The control worker: hosts every workflow and the control activities.

Stateless: run one or many, kill any at any time; work continues on the others (or when
one is back). ``python -m apothic.worker`` or ``apothic worker`` runs one.
"""

from ._worker import build_worker, ensure_search_attributes, run_worker

__all__ = ["build_worker", "ensure_search_attributes", "run_worker"]
