"""Where a job's attempts ran: recorded from their started events, shown and searchable.

A function container's runtime names its placement (``Placement``: provider, offer, instance,
host, image, price; read once from its ContainerWorkflow's memo) in the started event of each
input it runs, which reaches the job with its other events (by signal, or with the result of a
quick call). So a warm call learns where it ran without a request of its own. The job keeps one
``AttemptPlacement`` per started attempt (with the rented seconds and their cost), shows them in
its current details in the Temporal UI, and upserts the search attribute ``ApothicProvider``
(the providers its attempts ran on) behind the patch ``apothic-where-it-ran``.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey

from apothic._contracts import (
    SEARCH_ATTR_PROVIDER,
    AttemptPlacement,
    JobEventsIn,
    Placement,
)

from ._container import placement_text

# Marks jobs that upsert ApothicProvider once an attempt's container is known.
WHERE_PATCH = "apothic-where-it-ran"
PROVIDER_KEY = SearchAttributeKey.for_keyword_list(SEARCH_ATTR_PROVIDER)
_PLACEMENT_FIELDS = frozenset(f.name for f in dataclasses.fields(Placement))


def placement_from(data: Any) -> Placement | None:
    """A ``Placement`` from a started event's ``where`` (None if there is none)."""
    if not isinstance(data, dict) or not data.get("provider") or not data.get("container_id"):
        return None
    try:
        return Placement(**{k: v for k, v in data.items() if k in _PLACEMENT_FIELDS})
    except TypeError:
        return None


def _time(at: str) -> datetime | None:
    try:
        stamp = datetime.fromisoformat(at)
    except (TypeError, ValueError):
        return None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


class JobWhere:
    """The placements of one job's attempts (see the module docstring)."""

    def __init__(self) -> None:
        self.runs: dict[int, AttemptPlacement] = {}
        self.ended: dict[int, datetime] = {}
        self.providers: list[str] = []

    def started(self, batch: JobEventsIn, attempt: int) -> bool:
        """Note the attempt's started event, if ``batch`` has it; True if something new was learned."""
        if batch.attempt != attempt or attempt in self.runs:
            return False
        event = next((ev for ev in batch.events if ev.event == "started"), None)
        if event is None:
            return False
        placement = placement_from(event.data.get("where"))
        start = _time(event.at) or workflow.now()
        self.runs[attempt] = self._closed(AttemptPlacement(
            attempt=attempt, container_id=batch.container_id, placement=placement, started_at=start.isoformat(),
        ))
        if placement is not None and placement.provider not in self.providers:
            self.providers.append(placement.provider)
            if workflow.patched(WHERE_PATCH):
                workflow.upsert_search_attributes([PROVIDER_KEY.value_set(list(self.providers))])
        return True

    def ended_attempt(self, attempt: int) -> None:
        """The attempt's activity has ended (now, by the workflow's clock)."""
        if attempt and attempt not in self.ended:
            self.ended[attempt] = workflow.now()
            if attempt in self.runs:
                self.runs[attempt] = self._closed(self.runs[attempt])

    def _closed(self, run: AttemptPlacement) -> AttemptPlacement:
        end = self.ended.get(run.attempt)
        start = _time(run.started_at)
        if end is None or start is None:
            return run
        seconds = round(max(0.0, (end - start).total_seconds()), 3)
        dph = run.placement.dph if run.placement is not None else 0.0
        return dataclasses.replace(run, ended_at=end.isoformat(), rented_s=seconds, cost_usd=round(seconds * dph / 3600, 6))

    def info(self) -> dict[str, Any]:
        """The ``JobInfo`` fields: ``placement``, ``ran``, ``rented_s``, ``cost_usd``."""
        ran = [self.runs[k] for k in sorted(self.runs)]
        placed = [r.placement for r in ran if r.placement is not None]
        return {
            "placement": placed[-1] if placed else None,
            "ran": ran,
            "rented_s": round(sum(r.rented_s for r in ran), 3),
            "cost_usd": round(sum(r.cost_usd for r in ran), 6),
        }

    def text(self) -> str:
        """The attempts' placements as the job's current details in the Temporal UI (Markdown)."""
        lines = []
        for k in sorted(self.runs):
            run = self.runs[k]
            where = placement_text(run.placement) if run.placement is not None else f"container `{run.container_id}`"
            took = f"; {run.rented_s:g} s, ${run.cost_usd:.6f}" if run.ended_at else "; running"
            lines.append(f"- attempt {k}: {where}{took}")
        return "**ran on**\n\n" + "\n".join(lines) if lines else ""
