"""``apothic jobs list|status|logs|watch|cancel``: find jobs, follow them, stop them.

A job is one ``InvocationWorkflow`` (``remote``, ``spawn``, each item of ``spawn_map``, a
schedule's run, a generated function's example run). A map (``fn.map``, ``starmap``,
``for_each``) is one ``MapWorkflow`` whose inputs are not jobs: it is not listed, and its id is
refused by the other subcommands.

``list`` asks Temporal's visibility store (so it needs no control worker); the status of an
open job (``queued`` or ``running``) comes from describing it, as ``jobs status`` does.
``watch`` and ``logs --follow`` read the job's event stream (``Job.watch``) until its end and
exit 0 when the job completed, 1 when it failed, was cancelled, terminated or timed out, 130 on
Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .._contracts import EVENT_TYPES, NAME_RE, TERMINAL_EVENT_TYPES

DEFAULT_LIMIT = 20
# Open jobs described at once while listing (each is one DescribeWorkflowExecution).
DESCRIBE_AT_ONCE = 20
# How long `watch` waits for a completed job's result to show it.
RESULT_WAIT_S = 10.0
RESULT_CHARS = 200

# Apothic's job statuses and the ExecutionStatus of their workflow; queued and running are
# both 'Running' there (told apart by describing each open job).
STATUS_QUERY = {
    "queued": "Running",
    "running": "Running",
    "completed": "Completed",
    "failed": "Failed",
    "cancelled": "Canceled",
    "terminated": "Terminated",
    "timed_out": "TimedOut",
}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"^(?:\d+(?:\.\d+)?[smhdw])+$")


# --- the listing ------------------------------------------------------------------------------


def quote(value: str) -> str:
    """``value`` as a string literal of a visibility query: a quote or backslash inside it
    is escaped, so that it stays one value and cannot end the literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _function_clause(app: str | None, function: str) -> str:
    """Jobs of ``function``: the function's name (a class method's is ``Class.method``) or,
    with a dot, ``app.fn`` read at each dot (app names may hold dots too)."""
    from .._contracts import SEARCH_ATTR_APP, SEARCH_ATTR_FUNCTION

    readings = [f"{SEARCH_ATTR_FUNCTION} = {quote(function)}"]
    for i, ch in enumerate(function):
        if ch != ".":
            continue
        head, rest = function[:i], function[i + 1:]
        if app is None:
            readings.append(f"({SEARCH_ATTR_APP} = {quote(head)} AND {SEARCH_ATTR_FUNCTION} = {quote(rest)})")
        elif head == app:
            readings.append(f"{SEARCH_ATTR_FUNCTION} = {quote(rest)}")
    return readings[0] if len(readings) == 1 else "(" + " OR ".join(readings) + ")"


def jobs_query(
    app: str | None = None,
    function: str | None = None,
    statuses: list[str] | None = None,
    since: datetime | None = None,
) -> str:
    """The visibility query of ``apothic jobs list`` with these filters."""
    from .._contracts import INVOCATION_WORKFLOW, SEARCH_ATTR_APP

    parts = [f"WorkflowType = {quote(INVOCATION_WORKFLOW)}"]
    if app:
        parts.append(f"{SEARCH_ATTR_APP} = {quote(app)}")
    if function:
        parts.append(_function_clause(app, function))
    if statuses:
        wanted = sorted({STATUS_QUERY[s] for s in statuses})
        parts.append(f"ExecutionStatus IN ({', '.join(quote(w) for w in wanted)})")
    if since is not None:
        stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        parts.append(f"StartTime >= {quote(stamp)}")
    return " AND ".join(parts)


async def _open_status(client: Any, job_id: str) -> str | None:
    """An open job's status now (``queued``/``running``, or how it ended meanwhile); None: gone."""
    from temporalio.service import RPCError, RPCStatusCode

    from .._invoke._job import status_of

    try:
        desc = await client.get_workflow_handle(job_id).describe()
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return str(status_of(desc))


def _row(wf: Any, status: str, now: datetime) -> dict[str, Any]:
    from .._contracts import SEARCH_ATTR_APP, SEARCH_ATTR_FUNCTION

    sa = wf.search_attributes
    app = (sa.get(SEARCH_ATTR_APP) or ["?"])[0]
    name = (sa.get(SEARCH_ATTR_FUNCTION) or ["?"])[0]
    started, closed = wf.start_time, wf.close_time
    duration = ((closed or now) - started).total_seconds() if started else None
    return {
        "job_id": wf.id,
        "function": f"{app}.{name}",
        "app": app,
        "name": name,
        "status": status,
        "started": started.isoformat(timespec="seconds") if started else "",
        "closed": closed.isoformat(timespec="seconds") if closed else "",
        "duration_s": round(duration, 3) if duration is not None else None,
    }


async def list_jobs(
    app: str | None = None,
    limit: int = DEFAULT_LIMIT,
    *,
    function: str | None = None,
    statuses: list[str] | None = None,
    since: datetime | None = None,
) -> list[dict[str, Any]]:
    """The newest ``limit`` jobs that match (open ones first, as Temporal orders them), each a
    dict: ``job_id``, ``function`` (``app.fn``), ``app``, ``name``, ``status``, ``started``,
    ``closed``, ``duration_s`` (so far, for an open job)."""
    from temporalio.client import WorkflowExecutionStatus

    from .._control._client import get_client
    from .._invoke._job import _CLOSED

    client = await get_client()
    wanted = set(statuses or ())
    # queued and running are one ExecutionStatus: asking for one of them filters here, so
    # that the server's limit cannot be used.
    refine = bool(wanted & {"queued", "running"}) and not {"queued", "running"} <= wanted
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    chunk: list[Any] = []

    async def flush() -> None:
        open_ids = [wf.id for wf in chunk if wf.status == WorkflowExecutionStatus.RUNNING]
        found = await asyncio.gather(*(_open_status(client, i) for i in open_ids))
        states = dict(zip(open_ids, found, strict=True))
        for wf in chunk:
            if wf.id in states:
                status = states[wf.id]
            else:
                status = str(_CLOSED[wf.status]) if wf.status in _CLOSED else (wf.status.name.lower() if wf.status else "")
            if status is None or (wanted and status not in wanted) or len(rows) >= limit:
                continue
            rows.append(_row(wf, status, now))
        chunk.clear()

    query = jobs_query(app, function, statuses, since)
    async for wf in client.list_workflows(query, limit=None if refine else limit):
        chunk.append(wf)
        if len(chunk) >= DESCRIBE_AT_ONCE:
            await flush()
            if len(rows) >= limit:
                break
    await flush()
    return rows


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def _print_jobs(rows: list[dict[str, Any]]) -> None:
    print(f"{'JOB':26} {'FUNCTION':32} {'STATUS':10} {'STARTED':26} {'CLOSED':26} DURATION")
    for r in rows:
        took = _duration(r["duration_s"]) + ("" if r["closed"] else " so far")
        print(f"{r['job_id']:26} {r['function']:32} {r['status']:10} {r['started']:26} {r['closed'] or '-':26} {took}")


# --- argument types (a bad value is a usage error naming the value, what is allowed, the fix) -----


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: a whole number >= 1. Fix: e.g. --limit 50.")
    return value


def _one_of(text: str, allowed: tuple[str, ...] | dict[str, str], what: str, plural: str, example: str,
            lower: bool = False) -> list[str]:
    """A comma-separated list of names from ``allowed`` (``--status``, ``--types``)."""
    names = [(n.lower() if lower else n) for n in (s.strip() for s in text.split(",")) if n]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"{text!r}: unknown {plural if len(bad) > 1 else what} {', '.join(map(repr, bad)) or '(none)'}; "
            f"allowed: {', '.join(allowed)}. Fix: e.g. {example}."
        )
    return names


def _status(text: str) -> list[str]:
    return _one_of(text, STATUS_QUERY, "status", "statuses", "--status failed,timed_out", lower=True)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: a duration back from now (``30s``, ``10m``, ``2h``, ``1d``, ``1w``,
    ``1h30m``) or an ISO 8601 date or time (without an offset: this machine's time zone)."""
    now = now or datetime.now(UTC)
    value = text.strip()
    if _DURATION_RE.match(value.lower()):
        seconds = sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smhdw])", value.lower()))
        return now - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: allowed: a duration back from now (30s, 10m, 2h, 1d, 1w, 1h30m) or an ISO 8601 date or "
            "time (2026-05-01, 2026-05-01T12:00, 2026-05-01T12:00:00+02:00). Fix: e.g. --since 2h."
        ) from None
    when = when.astimezone() if when.tzinfo is None else when  # a naive time is local
    if when > now + timedelta(seconds=1):
        raise argparse.ArgumentTypeError(
            f"{text!r} is in the future ({when.isoformat(timespec='seconds')}): no job started after it. "
            "Fix: give an earlier time, or a duration such as 2h."
        )
    return when


def _name(kind: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not NAME_RE.match(text):
            from .._options._names import NAME_ALLOWED

            example = "--app my-app" if kind == "app" else "--function my_fn (or my-app.my_fn)"
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a{'n' if kind == 'app' else ''} {kind} name: allowed: {NAME_ALLOWED}. Fix: e.g. {example}."
            )
        return text

    return check


def _event_types(text: str) -> list[str]:
    return _one_of(text, EVENT_TYPES, "event type", "event types", "--types log,retry")


def _seq(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: allowed: a whole number >= 0, the seq of an event already seen (--json shows it). "
            "Fix: e.g. --after 12."
        )
    return value


# --- watch and logs --follow ------------------------------------------------------------------


def _clock(ts: datetime) -> str:
    return ts.astimezone().strftime("%H:%M:%S.%f")[:-3]


def _kv(data: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    return " ".join(f"{k}={v}" for k, v in data.items() if k not in skip and v not in (None, "", [], {}))


def _short(value: Any, limit: int = RESULT_CHARS) -> str:
    try:
        text = repr(value)
    except Exception as e:  # noqa: BLE001 - a user's __repr__
        text = f"<{type(value).__name__}: repr failed: {e}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _where(where: Any) -> str:
    if not isinstance(where, dict):
        return ""
    provider, host = where.get("provider") or "", where.get("host") or ""
    return f"{provider} on {host}" if provider and host else provider or host


def event_lines(event: str, data: dict[str, Any]) -> list[str]:
    """The readable text of one event: usually one line, one per line for ``log`` and image
    build output, a message's further lines after its first."""
    if event == "queued":
        version = data.get("version")
        return [f"{data.get('app')}.{data.get('function')}" + (f" v{version}" if version else "")]
    if event == "placement":
        status = data.get("status")
        if status == "requested":
            return [f"asked fleet {data.get('fleet_id')} for a container"]
        if status in ("failed", "no_match"):
            return str(data.get("reason") or status).splitlines() or [str(status)]
        offer = f"{data.get('provider')} offer {data.get('offer_id')}"
        gpu = f", {data.get('num_gpus')}x {data.get('gpu_name')}" if data.get("gpu_name") else ""
        price = f", ${data['dph_total']:.4f}/h" if isinstance(data.get("dph_total"), (int, float)) else ""
        matched = f" ({data.get('matched')} of {data.get('offers')} offers match)" if data.get("offers") else ""
        skipped = data.get("skipped") or {}
        notes = "".join(f"; {name} not used: {why}" for name, why in skipped.items()) if isinstance(skipped, dict) else ""
        return [offer + gpu + price + matched + notes]
    if event == "provisioning":
        return [f"{data.get('step')} {_kv(data, ('step', 'label'))}".rstrip()]
    if event == "image":
        tag, status = data.get("image", "?"), data.get("status")
        if status == "output":
            return [f"  {line}" for line in data.get("lines") or ()]
        if status == "failed":
            return [f"image {tag} failed: {data.get('error', '')}"]
        ref = f" ({data['ref']})" if data.get("ref") else ""
        return [f"image {tag} {status}{ref}" if status != "building" else f"building image {tag}"]
    if event == "container":
        if data.get("warning"):
            return [f"warning: {data['warning']}"]
        return [f"{data.get('status', '')} {_kv(data, ('status',))}".strip()]
    if event == "started":
        where = _where(data.get("where"))
        batch = f", batch {data['batch']} of {data.get('batch_size')}" if data.get("batch") else ""
        return [f"attempt {data.get('attempt')} in container {data.get('container_id')}"
                + (f" ({where})" if where else "") + batch]
    if event == "log":
        lines = [str(line) for line in data.get("lines") or ()]
        if data.get("truncated"):
            lines.append("(the job printed more than its event log keeps; `apothic jobs logs JOB` has the rest)")
        return lines
    if event == "output":
        if "error" in data:
            return [f"#{data.get('index')}: cannot be unpickled here: {data['error']}"]
        return [f"#{data.get('index')}: {_short(data.get('value'))}"]
    if event == "retry":
        wait, kind = data.get("retry_in_s"), data.get("kind")
        why = str(data.get("reason") or "")
        first, *more = why.splitlines() or [""]
        head = f"attempt {data.get('attempt')} failed ({first if kind == 'user' else f'{kind}: {first}'}); retrying"
        return [head + (f" in {wait:g} s" if isinstance(wait, (int, float)) else ""), *more]
    if event == "completed":
        outputs = data.get("outputs")
        return [f"attempt {data.get('attempt')}" + (f", {outputs} outputs" if outputs else "")]
    if event == "failed":
        message = str(data.get("message") or "")
        short = str(data.get("type") or "").rsplit(".", 1)[-1]  # builtins.ValueError: ValueError
        if short and not message.startswith(f"{short}:"):
            message = f"{short}: {message}"
        return message.splitlines() or [""]
    if event == "cancelled":
        return [f"attempt {data.get('attempt')}"]
    return [_kv(data)]


def _print_event(ev: Any, suffix: str = "") -> None:
    """``TIME  TYPE  DETAILS``; an event of several lines continues under its details."""
    prefix = f"{_clock(ev.timestamp)}  {ev.event:12} "
    lines = event_lines(ev.event, ev.data) or [""]
    lines[0] += suffix
    pad = " " * len(prefix)
    print("\n".join((prefix if i == 0 else pad) + line for i, line in enumerate(lines)).rstrip())


def _json_line(ev: Any) -> str:
    return json.dumps(
        {"seq": ev.seq, "event": ev.event, "timestamp": ev.timestamp.isoformat(), "job_id": ev.job_id,
         "data": ev.data},
        default=lambda v: _short(v, 10_000),
    )


async def _result_line(job: Any) -> str:
    """``result: <repr>`` of a completed job (shortened), or why it cannot be shown here."""
    try:
        value = await job.aio.wait(RESULT_WAIT_S)
    except Exception as e:  # noqa: BLE001 - e.g. a class this process cannot import
        return f"result not shown: {type(e).__name__}: {e}"
    return f"result: {_short(value)}"


async def _ended(job: Any, terminal: str | None) -> int:
    """The exit code for a job whose stream ended (0: it completed); says on stderr how a job
    ended that wrote no terminal event (terminated, or timed out in Temporal)."""
    if terminal is not None:
        return 0 if terminal == "completed" else 1
    status = await job.aio.status()
    print(f"apothic: job {job.job_id} ended without a final event: {status}", file=sys.stderr)
    return 0 if str(status) == "completed" else 1


async def watch(job: Any, *, as_json: bool, types: list[str] | None, snapshot: bool, after: int | None) -> int:
    """Print the job's events as they happen, until it ends; the exit code (see the module)."""
    await job.aio.status()  # no such job, or not a job: fail before waiting on anything
    asked = None if types is None else sorted(set(types) | set(TERMINAL_EVENT_TYPES))
    terminal = None
    async for ev in job.aio.watch(snapshot=snapshot, event_types=asked, after_seq=after):
        shown = types is None or ev.event in types
        if ev.terminal:
            terminal = ev.event
        if not shown:
            continue
        if as_json:
            print(_json_line(ev))
        else:
            _print_event(ev, ", " + await _result_line(job) if ev.event == "completed" else "")
    return await _ended(job, terminal)


def _write(text: str) -> None:
    sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
    sys.stdout.flush()


async def follow_logs(job: Any) -> int:
    """Print the job's output as its function prints it, until the job ends.

    A finished job: its kept output (``job.logs()``), as without ``--follow``. A queued or
    running one: every line from its event stream since it started, then the new ones as they
    come; a retry is a line ``--- attempt N failed (...); retrying ---`` before the next
    attempt's lines. The exit code as for ``watch``; how a job that did not complete ended is
    said on stderr.
    """
    status = await job.aio.status()
    if status.done:
        _write(await job.aio.logs())
        return 0 if str(status) == "completed" else 1
    terminal = None
    async for ev in job.aio.watch(snapshot=True, event_types=["log", "retry", *TERMINAL_EVENT_TYPES]):
        if ev.event == "log":
            lines = [str(line) for line in ev.data.get("lines") or ()]
            _write("".join(f"{line}\n" for line in lines))
            if ev.data.get("truncated"):
                print(f"apothic: the job printed more than its event log keeps; `apothic jobs logs {job.job_id}` "
                      "has the rest (each attempt's last 256 KiB)", file=sys.stderr)
        elif ev.event == "retry":
            _write(f"--- {event_lines('retry', ev.data)[0]} ---\n")
        elif ev.terminal:
            terminal = ev.event
            if ev.event == "failed":
                print(f"apothic: job {job.job_id} failed: {event_lines('failed', ev.data)[0]}", file=sys.stderr)
            elif ev.event == "cancelled":
                print(f"apothic: job {job.job_id} was cancelled", file=sys.stderr)
    return await _ended(job, terminal)


# --- the command ------------------------------------------------------------------------------


def cmd_jobs(args: argparse.Namespace) -> int:
    from .._control._loop import run_blocking
    from .._invoke._job import Job
    from ._where import status_output

    if args.jobs_cmd == "list":
        statuses = [s for group in args.status or () for s in group] or None
        rows = run_blocking(list_jobs(args.app, args.limit, function=args.function, statuses=statuses,
                                      since=args.since))
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            _print_jobs(rows)
        return 0
    job = Job.from_id(args.job_id)
    try:
        if args.jobs_cmd == "status":  # and where it ran (apothic/_cli/_where.py)
            print(status_output(job, as_json=args.json))
        elif args.jobs_cmd == "logs" and args.follow:
            return run_blocking(follow_logs(job))
        elif args.jobs_cmd == "logs":  # every attempt's output, each under "--- attempt N (...) ---" after a retry
            _write(job.logs())
        elif args.jobs_cmd == "watch":
            snapshot = args.start == "start"
            return run_blocking(watch(job, as_json=args.json, types=args.types, snapshot=snapshot, after=args.after))
        elif args.jobs_cmd == "cancel":
            job.status()  # refuses an id that is not a job's (a map's would be cancelled)
            job.cancel()
            print(f"{job.job_id}: {job.status()}")
    except BrokenPipeError:  # `apothic jobs watch JOB | head`: the reader has gone
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return 0


def add_jobs_parser(sub: Any) -> None:
    j = sub.add_parser("jobs", help="list, follow and cancel jobs",
                       description="List, inspect, follow and cancel jobs (spawn, remote, each item of spawn_map, "
                                   "schedule runs). A map (fn.map) is not a job.")
    jsub = j.add_subparsers(dest="jobs_cmd", required=True, metavar="SUBCOMMAND")
    jl = jsub.add_parser(
        "list", help="recent jobs, newest first",
        description="Recent jobs, open ones first, then by the time they closed, newest first. Filters combine "
                    "(AND). An open job shows queued (waiting for a container) or running.")
    jl.add_argument("--app", type=_name("app"), help="only this app's jobs")
    jl.add_argument("--function", type=_name("function"), metavar="FUNCTION",
                    help="only this function's jobs: its name (a class method: Class.method) or app.fn")
    jl.add_argument("--status", type=_status, action="append", metavar="STATUS[,STATUS]",
                    help=f"only jobs with this status ({', '.join(STATUS_QUERY)}); repeat or separate by commas")
    jl.add_argument("--since", type=parse_since, metavar="WHEN",
                    help="only jobs started since WHEN: a duration back from now (30s, 10m, 2h, 1d, 1w, 1h30m) or an "
                         "ISO 8601 date or time (without an offset: local time)")
    jl.add_argument("--limit", type=_limit, default=DEFAULT_LIMIT, metavar="N",
                    help=f"at most N jobs (default {DEFAULT_LIMIT})")
    jl.add_argument("--json", action="store_true", help="a JSON list, with app, name and duration_s too")
    for name, text in (("status", "print a job's status (and where it ran)"),
                       ("logs", "print a job's stdout and stderr (every attempt's)"),
                       ("watch", "print a job's events as they happen, until it ends"),
                       ("cancel", "cancel a job and wait until its function stopped")):
        jp = jsub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        jp.add_argument("job_id", metavar="JOB_ID")
    jsub.choices["status"].add_argument("--json", action="store_true", help="the job's details as JSON")
    jsub.choices["logs"].add_argument(
        "-f", "--follow", action="store_true",
        help="follow the output as the function prints it, until the job ends; exit 0 when it completed, 1 when "
             "it failed, was cancelled, terminated or timed out (a finished job: its output, then that exit code)")
    jw = jsub.choices["watch"]
    jw.formatter_class = argparse.RawDescriptionHelpFormatter
    jw.description = (
        "Print a job's events as they happen, one line each (a log event: one line per printed line), until the\n"
        "job ends: TIME (local) TYPE DETAILS. Event types:\n  " + ", ".join(EVENT_TYPES) + ".\n"
        "Exit code: 0 when the job completed, 1 when it failed, was cancelled, terminated or timed out,\n"
        "130 on Ctrl-C (the job goes on).")
    jw.add_argument("--json", action="store_true",
                    help="one JSON object per event and line: seq, event, timestamp, job_id, data")
    jw.add_argument("--types", type=_event_types, metavar="TYPE[,TYPE]",
                    help="only these event types (the exit code still follows the job's end)")
    jw.add_argument("--from", dest="start", choices=("start", "now"), default="start",
                    help="start: every event since the job was queued (default); now: only new ones (a finished job "
                         "shows its last event)")
    jw.add_argument("--after", type=_seq, metavar="SEQ",
                    help="resume after the event with this seq (overrides --from), e.g. after a lost connection")
    j.set_defaults(func=cmd_jobs)
