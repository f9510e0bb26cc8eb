"""``apothic jobs status JOB``: the job's status and where it ran."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .._contracts import AttemptPlacement, JobInfo, Placement


def _instance(p: Placement) -> str:
    label = {"process": "pid", "docker": "docker container", "vast": "instance"}.get(p.provider, "instance")
    return f"{label} {p.instance}" if p.instance else ""


def _run_line(run: AttemptPlacement) -> str:
    p = run.placement
    where = f"{p.provider}" + (f" on {p.host}" if p.host else "") if p is not None else "(where: not reported)"
    took = f"{run.rented_s:g} s, ${run.cost_usd:.6f}" if run.ended_at else "running"
    return f"attempt {run.attempt}: {where}, container {run.container_id}, {took}"


def where_lines(info: JobInfo) -> list[str]:
    """The job's placement as ``name  value`` lines (none before a container took it)."""
    p = info.placement
    if p is None:
        return [f"{'container':10}{info.container_id}"] if info.container_id else []
    rows = [
        ("provider", p.provider), ("host", p.host), ("instance", _instance(p)), ("offer", p.offer_id),
        ("image", (p.image or "(the control worker's Python)") if p.provider == "process" else p.image),
        ("gpu", f"{p.num_gpus} x {p.gpu_name}" if p.gpu_name else ""), ("location", p.geolocation),
        ("price", f"${p.dph:.4f}/h"), ("container", p.container_id),
        ("rented", f"{info.rented_s:g} s (${info.cost_usd:.6f})"),
    ]
    lines = [f"{name:10}{value}" for name, value in rows if value]
    if len(info.ran) > 1:
        lines += [f"{'':10}{_run_line(run)}" for run in info.ran]
    return lines


def status_output(job: Any, as_json: bool = False) -> str:
    """The status line, then where it ran (when a control worker answers the job's query)."""
    from ..exceptions import ApothicError

    status = str(job.status())
    try:
        info: JobInfo | None = job.info()
    except ApothicError:  # no control worker answers: the status alone (it needs none)
        info = None
    if as_json:
        data: dict[str, Any] = dataclasses.asdict(info) if info is not None else {"job_id": job.job_id}
        return json.dumps({**data, "status": status}, indent=2)
    lines = [status] + (where_lines(info) if info is not None else [])
    return "\n".join(lines)
