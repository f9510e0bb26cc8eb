"""``apothic volume create|list|ls|put|get|rm|delete``: volumes and the files inside them.

A volume is found by name in this host's registry (``default``, ``vast_local``), then in the
S3 store (``cloud``); ``ls``, ``put``, ``get`` and ``rm`` take paths inside the volume
(``/`` is its root).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..exceptions import InvalidError, NotFoundError


def _files(name: str) -> Any:
    from .._volumes._sdk import files_of_record, find

    return files_of_record(find(name))


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def cmd_volume(args: argparse.Namespace) -> int:
    from .._volumes._files import clean_path
    from .._volumes._sdk import create, delete, find, list_volumes

    cmd = args.volume_cmd
    if cmd == "create":
        rec, made = create(args.name, args.backend)
        print(f"{rec.name}: {'created' if made else 'exists already'} ({rec.backend})")
    elif cmd == "list":
        vols = list_volumes()
        if args.json:
            print(json.dumps([{"name": v.name, "backend": v.backend, "created_at": v.created_at,
                               "location": v.location} for v in vols], indent=2))
            return 0
        print(f"{'NAME':32} {'BACKEND':10} {'CREATED (UTC)':26} LOCATION")
        for v in vols:
            when = datetime.fromtimestamp(v.created_at, UTC).isoformat(timespec="seconds")
            print(f"{v.name:32} {v.backend:10} {when:26} {v.location}")
    elif cmd == "ls":
        files = _files(args.name)
        entries = files.listdir(clean_path(args.path, args.name), args.recursive)
        if args.json:
            print(json.dumps([{"path": e.path, "type": e.type, "size": e.size, "mtime": e.mtime} for e in entries],
                             indent=2))
            return 0
        for e in entries:
            print(f"{e.path}/" if e.type == "directory" else f"{e.path}\t{_size(e.size)}")
    elif cmd == "put":
        return _put(args)
    elif cmd == "get":
        return _get(args)
    elif cmd == "rm":
        files = _files(args.name)
        count = files.remove(clean_path(args.path, args.name), args.recursive)
        print(f"{args.name}: removed {count} file(s)")
    elif cmd == "delete":
        rec = find(args.name)
        if not args.yes:
            if not sys.stdin.isatty():
                raise InvalidError(f"deleting volume {args.name!r} removes all its files. Fix: confirm with --yes.")
            answer = input(f"Delete volume {args.name!r} ({rec.backend}) and all its files? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("not deleted")
                return 1
        from .._control._loop import run_blocking

        run_blocking(delete(args.name))
        print(f"{args.name}: deleted")
    return 0


def _put(args: argparse.Namespace) -> int:
    from .._volumes._files import clean_path
    from .._volumes._sdk import _put as put_one

    files = _files(args.name)
    local = Path(args.local)
    remote = args.remote or "/"
    if local.is_dir():
        base = clean_path(remote, args.name)
        items = [(p, f"{base}/{p.relative_to(local).as_posix()}".lstrip("/")) for p in sorted(local.rglob("*"))
                 if p.is_file()]
    elif local.is_file():
        target = f"{remote.rstrip('/')}/{local.name}" if remote.endswith("/") else remote
        items = [(local, target)]
    else:
        raise InvalidError(f"put: local path {args.local!r} does not exist. Fix: give a file or a folder.")
    total = 0
    for path, target in items:
        total += put_one(files, path, target, args.force)
    print(f"{args.name}: put {len(items)} file(s), {_size(total)}")
    return 0


def _get(args: argparse.Namespace) -> int:
    from .._volumes._files import clean_path

    files = _files(args.name)
    rel = clean_path(args.remote, args.name)
    entries = files.listdir(rel)
    single = len(entries) == 1 and entries[0].type == "file" and entries[0].path == rel
    if args.local == "-":
        if not single:
            raise InvalidError(f"get {args.remote!r} -: not a file of volume {args.name!r}. Fix: give a file path, "
                               "or a local folder instead of '-'.")
        files.read(rel, sys.stdout.buffer)
        sys.stdout.flush()
        return 0
    local = Path(args.local or ".")
    if single:
        dest = local / Path(rel).name if local.is_dir() else local
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() and not args.force:
            raise InvalidError(f"get: {dest} exists. Fix: pass --force to replace it.")
        with open(dest, "wb") as f:
            files.read(rel, f)
        print(f"{args.name}: got {rel} -> {dest}")
        return 0
    wanted = [e for e in files.listdir(rel, True) if e.type == "file"]
    if not wanted and rel:
        raise NotFoundError(f"no such file or directory {('/' + rel)!r} in volume {args.name!r}.")
    for e in wanted:
        dest = local / (e.path[len(rel):].lstrip("/") if rel else e.path)
        if dest.exists() and not args.force:
            raise InvalidError(f"get: {dest} exists. Fix: pass --force to replace it.")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as f:
            files.read(e.path, f)
    print(f"{args.name}: got {len(wanted)} file(s) -> {local}")
    return 0


def add_volume_parser(sub: Any) -> None:
    from .._volumes._sdk import BACKENDS

    v = sub.add_parser("volume", help="create, list and delete volumes; list, put, get and remove their files",
                       description="Named volumes that functions mount with volumes=[...]. default volumes are "
                                   "folders of the control plane's host ($APOTHIC_HOME/volumes), cloud ones live in "
                                   "the S3 store (blobs.store), vast_local ones on a rented machine.")
    vs = v.add_subparsers(dest="volume_cmd", required=True, metavar="SUBCOMMAND")
    c = vs.add_parser("create", help="create a volume (nothing happens if it exists)")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--backend", choices=BACKENDS, default="default")
    ll = vs.add_parser("list", help="every volume")
    ll.add_argument("--json", action="store_true")
    ls = vs.add_parser("ls", help="the files and folders at a path of a volume")
    ls.add_argument("name", metavar="NAME")
    ls.add_argument("path", metavar="PATH", nargs="?", default="/")
    ls.add_argument("-r", "--recursive", action="store_true", help="everything below PATH")
    ls.add_argument("--json", action="store_true")
    p = vs.add_parser("put", help="upload a local file or folder into a volume")
    p.add_argument("name", metavar="NAME")
    p.add_argument("local", metavar="LOCAL")
    p.add_argument("remote", metavar="REMOTE", nargs="?", default="/",
                   help="path in the volume (default /; ending in / keeps the file's name)")
    p.add_argument("--force", action="store_true", help="replace files that exist")
    g = vs.add_parser("get", help="download a file or folder of a volume ('-' as LOCAL: a file to stdout)")
    g.add_argument("name", metavar="NAME")
    g.add_argument("remote", metavar="REMOTE")
    g.add_argument("local", metavar="LOCAL", nargs="?", default=".")
    g.add_argument("--force", action="store_true", help="replace local files that exist")
    r = vs.add_parser("rm", help="remove a file (or a folder with -r) from a volume")
    r.add_argument("name", metavar="NAME")
    r.add_argument("path", metavar="PATH")
    r.add_argument("-r", "--recursive", action="store_true")
    d = vs.add_parser("delete", help="delete a volume and all its files")
    d.add_argument("name", metavar="NAME")
    d.add_argument("-y", "--yes", action="store_true", help="do not ask")
    v.set_defaults(func=cmd_volume)
