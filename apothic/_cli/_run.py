"""``apothic run FILE[::NAME] [ARGS]``: a local entrypoint, or one function, with the app live.

The app is deployed for the run (``with app.run():``) and removed when it ends, unless
``--detach`` (or it was deployed with ``apothic deploy`` before): see ``_invoke/_ephemeral``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import signal
import sys
from typing import Any

from ..exceptions import InvalidError
from ._appfile import apps_in, load_app_file

DESCRIPTION = """\
Deploy the app of FILE for the duration of the run, then:

  - with a local entrypoint (@app.local_entrypoint()): call it on this machine, its parameters
    taken from flags (`--n 5 --name x --shout/--no-shout`; `FILE::main --help` lists them);
  - with a FUNCTION (FILE::FUNCTION): call it remotely with ARGS (each parsed as JSON, else
    taken as a string; `--name VALUE` sets a parameter by name) and print its result
    (a generator's items, one per line).

What the app's functions print (and image builds) shows on stderr as it happens. When the run
ends (also on Ctrl-C), its running jobs are cancelled and the app is removed: its schedules,
fleets and containers are gone. `--detach` keeps the app deployed, as `apothic deploy` does; an
app deployed with `apothic deploy` before stays deployed.

The examples folder has one small app per feature, each with a local entrypoint: for instance
`examples/hello_world.py --n 5` runs its entrypoint with n=5."""

EPILOG = """\
example, from the root folder of the Apothic repository (prints 49):
  apothic run examples/quickstart.py::slow_square 7"""


def add_run_parser(sub: Any) -> None:
    r = sub.add_parser("run", help="run a file's local entrypoint (or one function) with its app live",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("target", metavar="FILE[::NAME]")
    r.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="the entrypoint's flags, or the function's arguments")
    r.add_argument("--detach", action="store_true",
                   help="keep the app deployed after the run (with a FUNCTION: print the job id and return at once)")
    r.set_defaults(func=cmd_run)


def _pick(path: str, name: str, apps: list[Any]) -> Any:
    """The entrypoint or function ``name`` names (or the file's only one)."""
    entrypoints = {n: e for app in apps for n, e in app.registered_entrypoints.items()}
    functions = {n: f for app in apps for n, f in app.registered_functions.items()}
    if name:
        found = entrypoints.get(name) or functions.get(name)
        if found is None:
            raise InvalidError(
                f"{path} has no local entrypoint or app function {name!r}; it has "
                + _listing(entrypoints, functions) + f". Fix: name one of them, `{path}::NAME`."
            )
        return found
    if len(entrypoints) == 1:
        return next(iter(entrypoints.values()))
    if not entrypoints and len(functions) == 1:
        return next(iter(functions.values()))
    raise InvalidError(
        f"{path} has " + _listing(entrypoints, functions) + f". Fix: name the one to run, `{path}::NAME`"
        + ("" if entrypoints else ", or add one with @app.local_entrypoint()") + "."
    )


def _listing(entrypoints: dict[str, Any], functions: dict[str, Any]) -> str:
    return (f"{len(entrypoints)} local entrypoint(s) {sorted(entrypoints)} and "
            f"{len(functions)} function(s) {sorted(functions)}")


def _parse_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _show(result: Any) -> str:
    plain = isinstance(result, (dict, list, int, float, bool)) or result is None
    if plain:
        try:
            return json.dumps(result)
        except (TypeError, ValueError):
            pass
    return str(result)


def _wants_help(argv: list[str]) -> bool:
    head = argv[: argv.index("--")] if "--" in argv else argv
    return "--help" in head or "-h" in head


def cmd_run(args: argparse.Namespace) -> int:
    from .._invoke._entrypoint import LocalEntrypoint, function_flags, parse_flags

    path, _, name = args.target.partition("::")
    module = load_app_file(path)
    target = _pick(path, name, apps_in(module))
    argv = list(args.args)
    where = f"apothic run {args.target}"
    if isinstance(target, LocalEntrypoint):
        if _wants_help(argv):
            print(target.usage(f"{path}::{target.name}"))
            return 0
        kwargs = target.parse(argv, where)  # a bad flag fails before anything is deployed
        with _terminated_as_interrupt(), target.app.run(detach=args.detach):
            if target.is_async:
                asyncio.run(target.raw_f(**kwargs))
            else:
                target.raw_f(**kwargs)
        return 0
    fn = target
    if _wants_help(argv):
        flags = function_flags(fn.raw_f)
        print(f"usage: apothic run {path}::{fn.function_name} [ARGS as JSON] "
              + " ".join(f.usage() for f in flags) + "\n\n" + (inspect.getdoc(fn.raw_f) or ""))
        return 0
    positional, kwargs = parse_flags(function_flags(fn.raw_f), argv, where, positional=True)
    call_args = [_parse_arg(a) for a in positional]
    generator = inspect.isgeneratorfunction(fn.raw_f) or inspect.isasyncgenfunction(fn.raw_f)
    with _terminated_as_interrupt(), fn.app.run(detach=args.detach):
        if args.detach:
            print(fn.spawn(*call_args, **kwargs).job_id)
            return 0
        if generator:
            for item in fn.remote_gen(*call_args, **kwargs):
                print(_show(item))
            return 0
        job = fn.spawn(*call_args, **kwargs)
        print(f"job {job.job_id}", file=sys.stderr)
        print(_show(job.wait()))  # before the app is removed
    return 0


class _terminated_as_interrupt:
    """SIGTERM ends the run as Ctrl-C does: the ``with app.run()`` block still removes the app."""

    def __enter__(self) -> None:
        def interrupt(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        try:
            self.before = signal.signal(signal.SIGTERM, interrupt)
        except ValueError:  # not the main thread
            self.before = None

    def __exit__(self, *exc: object) -> None:
        if self.before is not None:
            signal.signal(signal.SIGTERM, self.before)
