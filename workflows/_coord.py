"""What DictWorkflow and QueueWorkflow share: the owner's lease, refusals once deleted, and when
to continue as new (one long-running workflow per ``apothic.Dict`` or ``apothic.Queue``)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from apothic._contracts import COORD_UPDATES_PER_RUN


class CoordEntity:
    """The part of a coordination workflow that is not about its data. A subclass sets ``KIND``
    and, in its ``__init__``, calls ``_begin``."""

    KIND = ""

    def _begin(self, name: str, lease_s: float, runs: int) -> None:
        self.name = name
        self.lease_s = lease_s  # > 0: ephemeral, ends when its owner is not heard from for this long
        self.runs = runs
        self.updates = 0
        self.deleted = False
        self.last_seen = workflow.now().timestamp()

    def _continue_due(self) -> bool:
        return self.updates >= COORD_UPDATES_PER_RUN or workflow.info().is_continue_as_new_suggested()

    def _touch(self) -> None:
        self.updates += 1
        self.last_seen = workflow.now().timestamp()

    def _refuse_if_deleted(self) -> None:
        if self.deleted:
            raise ApplicationError(f"{self.KIND} {self.name!r} was deleted", type="Deleted", non_retryable=True)

    @workflow.signal
    def touch(self) -> None:
        """The owner of an ephemeral Dict or Queue is alive."""
        self.last_seen = workflow.now().timestamp()
