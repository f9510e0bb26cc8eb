"""``apothic secret create|list|delete``: the secret store from the command line.

The commands write and read the store file of the settings in force (``secrets.file`` in
``temporal-dev.yaml``, ``APOTHIC_SECRETS_FILE``) directly, as ``modal secret`` does its
server's. No command prints a value: ``list`` shows names and keys, errors name keys and the
lengths of values.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from ..exceptions import InvalidError

_DOTENV_LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*")


class _Intermixed(argparse.ArgumentParser):
    """A subcommand parser that takes options between its positionals too (``create NAME
    --from-dotenv .env KEY=VALUE``): argparse alone would refuse the pairs after the option."""

    _inside = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._inside:  # parse_known_intermixed_args calls back in here (Python 3.11, 3.12)
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def add_secret_parser(sub: Any) -> None:
    s = sub.add_parser(
        "secret", help="create, list and delete secrets",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Secrets are named sets of KEY=VALUE pairs in the secret store of the control plane's host
(secrets.file in temporal-dev.yaml, APOTHIC_SECRETS_FILE; default
$APOTHIC_HOME/secrets/secrets.json, mode 0600, not encrypted). A function with
secrets=[apothic.Secret.from_name(NAME)] gets the pairs in its environment, read when its
container starts; they never enter a workflow's history.""")
    ssub = s.add_subparsers(dest="secret_cmd", required=True, metavar="SUBCOMMAND", parser_class=_Intermixed)
    c = ssub.add_parser(
        "create", help="create a secret (or replace one with --force)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Create secret NAME with the pairs KEY=VALUE (and those of --from-dotenv/--from-json; a pair\n"
                    "given here wins). Values on the command line stay in your shell's history and are\n"
                    "visible to `ps` while this runs: prefer a file for real credentials.",
        epilog="example:\n  apothic secret create HF_TOKEN HF_TOKEN=hf_abc123\n"
               "  apothic secret create db --from-dotenv .env.db --force")
    c.add_argument("name", metavar="NAME")
    c.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    c.add_argument("--from-dotenv", metavar="PATH", help="read KEY=VALUE lines from a .env file")
    c.add_argument("--from-json", metavar="PATH", help="read a JSON object of KEY: VALUE strings")
    c.add_argument("--force", action="store_true", help="replace the secret if it exists")
    ls = ssub.add_parser("list", help="every secret's name and keys (never values)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    d = ssub.add_parser("delete", help="delete a secret (running containers keep what they got)")
    d.add_argument("name", metavar="NAME")
    d.add_argument("--allow-missing", action="store_true", help="no error if there is no such secret")
    s.set_defaults(func=cmd_secret)


def parse_pairs(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """``KEY=VALUE`` arguments as a dict, and a problem line for each bad one: named by its key,
    or by its position when it has no ``=`` (it may be a value pasted alone), never shown."""
    pairs: dict[str, str] = {}
    problems = []
    for i, arg in enumerate(args, 1):
        key, sep, value = arg.partition("=")
        if not sep:
            # Not shown: a value pasted alone looks like any other word (hf_abc..., ghp_...).
            problems.append(f"  - pair {i} (<hidden, {len(arg)} characters>): no '='; allowed: KEY=VALUE, e.g. "
                            "HF_TOKEN=hf_abc. Fix: write KEY=VALUE, with the variable's name before the '='.")
        elif key in pairs:
            problems.append(f"  - {key}: given twice; allowed: each key once. Fix: keep one {key}=VALUE.")
        else:
            pairs[key] = value
    return pairs, problems


def read_dotenv(path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (``export`` allowed, ``#`` comments, blank lines; a value may be in
    single quotes, kept as written, or double quotes, with ``\\n``, ``\\"`` and ``\\\\``)."""
    text = _read(path, "--from-dotenv")
    pairs: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _DOTENV_LINE.fullmatch(line)
        value = m.group(2) if m else ""
        if m and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            inner = value[1:-1]
            value = inner if value[0] == "'" else _unescape(inner)
        elif m and value[:1] in "'\"":
            m = None  # an opening quote without its closing one
        elif m:
            value = re.split(r"\s+#", value, maxsplit=1)[0]
        if m is None:
            raise InvalidError(f"--from-dotenv {path}: line {n} is not KEY=VALUE; allowed: KEY=VALUE lines, "
                               "'#' comments and blank lines (quoted values on one line). Fix: correct that line.")
        pairs[m.group(1)] = value
    return pairs


def _unescape(text: str) -> str:
    """A double-quoted dotenv value: ``\\n`` is a line break, ``\\"`` and ``\\\\`` what they escape."""
    return re.sub(r'\\([n"\\])', lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def read_json(path: str) -> dict[str, str]:
    text = _read(path, "--from-json")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidError(f"--from-json {path}: not JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                           "allowed: a JSON object of strings. Fix: correct the file.") from None
    if not isinstance(data, dict):
        raise InvalidError(f"--from-json {path}: the top level is a {type(data).__name__}; allowed: a JSON object "
                           'of strings, e.g. {"HF_TOKEN": "hf_abc"}. Fix: correct the file.')
    return data  # the store checks every key and value


def _read(path: str, flag: str) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise InvalidError(f"{flag} {path}: cannot be read ({why}); allowed: a readable UTF-8 file. "
                           "Fix: give the path of the file.") from None


def cmd_secret(args: argparse.Namespace) -> int:
    from .._control._config import load_settings
    from .._options._problems import raise_problems
    from .._secrets import store_for
    from .._secrets._store import name_problems, pair_problems

    store = store_for(load_settings())
    if args.secret_cmd == "create":
        values: dict[str, Any] = {}
        if args.from_dotenv:
            values.update(read_dotenv(args.from_dotenv))
        if args.from_json:
            values.update(read_json(args.from_json))
        pairs, problems = parse_pairs(args.pairs)
        values.update(pairs)
        if values or problems:
            problems = name_problems(args.name) + problems + (pair_problems(values) if values else [])
        else:
            problems = name_problems(args.name) + [
                f"  - KEY=VALUE: none given; allowed: at least one pair. Fix: e.g. apothic secret create "
                f"{args.name} HF_TOKEN=hf_abc, or --from-dotenv .env."]
        raise_problems(f"apothic secret create {args.name}", problems)
        outcome = store.create(args.name, values, overwrite=args.force)
        keys = ", ".join(sorted(values))
        print(f"{outcome} secret {args.name!r} with the keys {keys} in {store.path}")
        print(f"use it with @app.function(secrets=[apothic.Secret.from_name({args.name!r})])")
        return 0
    if args.secret_cmd == "list":
        infos = store.list()
        if args.json:
            print(json.dumps([{"name": i.name, "keys": list(i.keys), "created_at": i.created_at.isoformat(),
                               "updated_at": i.updated_at.isoformat()} for i in infos], indent=2))
            return 0
        if not infos:
            print(f"no secrets in {store.path} (create one with `apothic secret create NAME KEY=VALUE`)")
            return 0
        rows = [("NAME", "KEYS", "UPDATED")] + [
            (i.name, ", ".join(i.keys), i.updated_at.strftime("%Y-%m-%d %H:%M:%S UTC")) for i in infos]
        widths = [max(len(r[c]) for r in rows) for c in range(2)]
        for r in rows:
            print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}")
        return 0
    if store.delete(args.name, allow_missing=args.allow_missing):
        print(f"deleted secret {args.name!r} from {store.path}")
    else:
        print(f"no secret {args.name!r} in {store.path} (nothing to delete)", file=sys.stderr)
    return 0
