"""``apothic apps list|stop|remove``: deployed apps as a whole (``apothic.App.objects`` in Python)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .._invoke._apps import STOP_WAIT_S

STOP_HELP = f"""\
Drain every container of APP (every version): each takes no new input, finishes the inputs it
runs and releases its machine. The command waits until they are released (at most --wait
seconds, default {STOP_WAIT_S:g}; they go on draining after that).

APP stays deployed: the next call starts a container again, and calls that were waiting for
one get it once the drained containers are gone. Its schedules keep firing (each run starts a
container): pause one with `apothic schedules pause APP FUNCTION`, or remove the app. Unlike
`modal app stop`, this is not an undeploy: that is `apothic apps remove APP`."""

REMOVE_HELP = """\
Undeploy APP: cancel its running jobs and maps (their functions are interrupted), delete its
schedules, drain its fleets and release their containers, and wait until they are gone
(at most 90 s; what is left then stops on its own). Calls to the app then fail with
"app APP is not deployed ...: it was removed at ..."; `apothic deploy FILE` deploys it again
as a new version. This is what `modal app stop` does to a Modal app."""


def add_apps_parser(sub: Any) -> None:
    a = sub.add_parser("apps", help="list deployed apps, stop their containers, remove them",
                       description="Deployed apps as a whole: what runs, draining their containers, undeploying "
                                   "them (apothic.App.objects in Python).")
    asub = a.add_subparsers(dest="apps_cmd", required=True, metavar="SUBCOMMAND")
    ls = asub.add_parser("list", help="deployed apps: version, functions, schedules, running containers",
                         description="Every deployed app, by name: its current version and when it was deployed, "
                                     "its functions and their schedules, and how many of its containers run now "
                                     "(every version; starting and draining ones included). Apps that a run "
                                     "(`apothic run`, `with app.run():`) deployed are marked ephemeral.")
    ls.add_argument("--json", action="store_true", help="print JSON")
    st = asub.add_parser("stop", help="drain an app's containers (it stays deployed; schedules keep firing)",
                         description=STOP_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    st.add_argument("app", metavar="APP")
    st.add_argument("--wait", type=float, default=STOP_WAIT_S, metavar="SECONDS",
                    help=f"how long to wait for the containers to be released (default {STOP_WAIT_S:g}; 0: not at all)")
    rm = asub.add_parser("remove", help="undeploy an app: cancel its jobs, delete its schedules, release its containers",
                         description=REMOVE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    rm.add_argument("app", metavar="APP")
    rm.add_argument("--allow-missing", action="store_true",
                    help="no error if APP is not deployed (what still runs of it is cancelled and released all the same)")
    a.set_defaults(func=cmd_apps)


def _rows(infos: list[Any]) -> list[dict[str, Any]]:
    return [{
        "app": i.name, "version": i.version,
        "deployed_at": i.deployed_at.isoformat(timespec="seconds") if i.deployed_at else "",
        "functions": list(i.functions), "schedules": dict(i.schedules), "containers": i.containers,
        "ephemeral": i.ephemeral,
    } for i in infos]


def cmd_apps(args: argparse.Namespace) -> int:
    from .._control._config import load_settings
    from .._control._loop import run_blocking
    from .._invoke._apps import list_apps, remove_deployed, stop_app
    from .._options._names import check_name
    from ..exceptions import InvalidError

    settings = load_settings()
    if args.apps_cmd == "list":
        rows = _rows(run_blocking(list_apps(settings)))
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        if not rows:
            print(f"no app is deployed on {settings.address} (namespace {settings.namespace!r})")
            return 0
        width = max(24, *(len(r["app"]) + 1 for r in rows))
        print(f"{'APP':{width}} {'VERSION':8} {'DEPLOYED (UTC)':26} {'CONTAINERS':11} FUNCTIONS")
        for r in rows:
            name = r["app"] + (" (ephemeral)" if r["ephemeral"] else "")
            print(f"{name:{width}} {r['version']:<8} {r['deployed_at']:26} {r['containers']:<11} "
                  f"{', '.join(r['functions'])}")
            for fn, spec in r["schedules"].items():
                print(f"{'':{width}} schedule {fn}: {spec}")
        return 0
    app = check_name("app", args.app)
    if args.apps_cmd == "stop":
        if not args.wait >= 0:
            raise InvalidError(f"--wait {args.wait:g}: allowed: 0 or more seconds. Fix: e.g. --wait 60 (0: do not wait).")
        s = run_blocking(stop_app(settings, app, wait_s=args.wait))
        if not s.containers:
            print(f"{app}: no container was running; the app stays deployed")
        elif s.left:
            print(f"{app}: draining {len(s.containers)} container(s); {len(s.left)} still finishing their inputs after "
                  f"{args.wait:g} s (they are released when done); the app stays deployed")
        else:
            print(f"{app}: stopped {len(s.containers)} container(s), all released; the app stays deployed")
        return 0
    r = run_blocking(remove_deployed(settings, app, allow_missing=args.allow_missing))
    cancelled = f", cancelled {len(r.cancelled)} running job(s)" if r.cancelled else ""
    if r.fleets_left:
        print(f"{app}: removed version {r.version}{cancelled}; still draining: {', '.join(r.fleets_left)} "
              "(they stop on their own)")
    elif r.removed:
        print(f"{app}: removed version {r.version}{cancelled}; its schedules, fleets and containers are gone")
    else:
        print(f"{app}: was not deployed{cancelled}; nothing of it runs")
    return 0
