"""The tree walk and content hash of local files and directories that an image takes.

:func:`walk_tree` is the one walk behind both the content hash (:func:`hash_tree`) and every
copy of a tree a builder makes, so that what is copied is what was hashed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from fnmatch import fnmatchcase

from ._checks import Problems, flatten, invalid

__all__ = [
    "CONTEXT_EXCLUDES",
    "PYTHON_SOURCE_EXCLUDES",
    "hash_file_or_fail",
    "hash_tree",
    "hash_tree_or_fail",
    "normalise_ignore",
    "walk_tree",
]

_CHUNK = 1 << 20

# Excluded from the Dockerfile context hash and from Python source hashes.
CONTEXT_EXCLUDES = (".git", "__pycache__")
PYTHON_SOURCE_EXCLUDES = (".git", "__pycache__", "*.pyc", "*.pyo")


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def normalise_ignore(patterns: object, problems: Problems) -> tuple[str, ...]:
    """Sorted, de-duplicated ``ignore=`` glob patterns without ``./`` prefixes or trailing ``/``."""
    if isinstance(patterns, str):
        patterns = (patterns,)
    if callable(patterns):
        problems.add(
            "ignore= must be glob patterns such as ['*.log', 'data/raw']; callables "
            "cannot be hashed or serialised"
        )
        return ()
    out = set()
    for pat in flatten(patterns, "ignore pattern", problems):
        p = pat.strip()
        while p.startswith("./"):
            p = p[2:]
        p = p.rstrip("/")
        if not p:
            problems.add(f"ignore pattern {pat!r} is empty; remove it")
        else:
            out.add(p)
    return tuple(sorted(out))


def _ignored(rel: str, patterns: tuple[str, ...]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    for pat in patterns:
        if fnmatchcase(rel, pat):
            return True
        if "/" not in pat and fnmatchcase(name, pat):
            return True
        if pat.startswith("**/") and (fnmatchcase(rel, pat[3:]) or fnmatchcase(name, pat[3:])):
            return True
    return False


def walk_tree(root: str, ignore: tuple[str, ...]) -> Iterator[tuple[str, str, str]]:
    """``(path, relative path, kind)`` of every entry of a tree that an image takes, top-down
    (a folder before what it holds): kind ``"dir"``, ``"file"`` (regular) or ``"link"``.

    The one walk behind the tree hash and every copy of a tree (the Docker build context, the
    virtual-environment image), so that what is copied is what was hashed: ``ignore`` patterns
    (see :func:`_ignored`) drop entries and whole folders; symlinks, to folders too, are not
    followed; sockets, FIFOs and devices are skipped. Raises OSError on an unreadable folder.
    """

    def onerror(err: OSError) -> None:
        raise err

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        prefix = "" if rel_dir == "." else rel_dir + "/"
        kept = []
        for d in sorted(dirnames):
            rel = prefix + d
            if _ignored(rel, ignore):
                continue
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                yield full, rel, "link"
            else:
                yield full, rel, "dir"
                kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            rel = prefix + name
            if _ignored(rel, ignore):
                continue
            full = os.path.join(dirpath, name)
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                yield full, rel, "link"
            elif stat.S_ISREG(mode):
                yield full, rel, "file"


def hash_tree(root: str, ignore: tuple[str, ...]) -> str:
    """SHA-256 over a sorted manifest of a directory: relative paths, kinds, exec bits, bytes.

    Symlinked directories are recorded by their target text and not followed; symlinked
    files are recorded by target text and, when the target is a regular file, its content.
    Sockets, FIFOs and devices are skipped. Raises OSError on unreadable entries.
    """
    entries: list[bytes] = []

    def add(kind: bytes, rel: str, payload: bytes = b"") -> None:
        entries.append(kind + b"\0" + os.fsencode(rel) + b"\0" + payload)

    for full, rel, kind in walk_tree(root, ignore):
        if kind == "dir":
            add(b"d", rel)
        elif kind == "link":
            payload = os.fsencode(os.readlink(full))
            try:
                st = os.stat(full)
            except OSError:
                st = None
            if st is not None and stat.S_ISREG(st.st_mode):
                payload += b"\0" + _sha256_file(full).encode()
            add(b"l", rel, payload)
        else:
            exec_bit = b"x" if os.lstat(full).st_mode & 0o111 else b"-"
            add(b"f", rel, exec_bit + _sha256_file(full).encode())
    entries.sort()
    digest = hashlib.sha256(b"apothic-tree-v1\n")
    for e in entries:
        digest.update(e + b"\n")
    return digest.hexdigest()


def hash_file_or_fail(path: str, where: str) -> str:
    try:
        return _sha256_file(path)
    except OSError as e:
        invalid(f"{where}: cannot read {path!r}: {e.strerror or e}; check its permissions")


def hash_tree_or_fail(path: str, ignore: tuple[str, ...], where: str) -> str:
    try:
        return hash_tree(path, ignore)
    except OSError as e:
        name = e.filename or path
        invalid(
            f"{where}: cannot read {name!r}: {e.strerror or e}; fix its permissions or ignore it"
        )
