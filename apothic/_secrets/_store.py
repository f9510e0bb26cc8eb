"""The secret store: named sets of ``KEY=VALUE`` pairs in one file on the control plane's host.

The CLI (``apothic secret ...``) and the SDK (``apothic.Secret.objects``) write the file; the
control worker reads it in the activity that starts a container, and nothing else does.

The file (JSON, UTF-8)::

    {"format": "apothic-secrets", "version": 1,
     "secrets": {"HF_TOKEN": {"values": {"HF_TOKEN": "hf_..."},
                              "created_at": "2025-01-01T00:00:00Z", "updated_at": "..."}}}

Protection: the file is mode 0600; a folder Apothic creates for it is mode 0700 (the default
one, ``$APOTHIC_HOME/secrets``, is kept so), and a folder that others may write is refused
(they could swap the file). A store that group or others may read is refused, naming the
``chmod`` that fixes it. Values are **not encrypted** at rest: like ``~/.aws/credentials`` or
``~/.docker/config.json``, the file is only as safe as the account that owns it (and that
account's backups).

Writers: read, change and write under an exclusive ``flock`` of ``<file>.lock`` (plus a lock
per process, since ``flock`` serialises open files, not threads), into a temporary file of the
same folder that is flushed to disk and then renamed over the store. Readers never lock: a
rename is atomic, so they see the old file or the new one, whole.

Nothing here prints, logs or words an error with a value: problems name the secret, the key
and the value's length only.
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import json
import os
import re
import secrets as _random
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._contracts import NAME_RE
from .._options._names import NAME_ALLOWED
from .._options._problems import format_problem, raise_problems, show
from ..exceptions import ApothicError, InvalidError, NotFoundError

FORMAT = "apothic-secrets"
VERSION = 1
KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Modal's limits for one pair.
MAX_KEY_CHARS = 16_384
MAX_VALUE_CHARS = 32_768
# The runtime's own variables (connection, deployment): a secret may not set them.
RESERVED_PREFIX = "APOTHIC_"
KEY_ALLOWED = (f"an environment variable name: letters, digits and '_', not starting with a digit, at most "
               f"{MAX_KEY_CHARS} characters, not starting with {RESERVED_PREFIX} (the runtime's own)")
VALUE_ALLOWED = f"a string of at most {MAX_VALUE_CHARS} characters without NUL characters"
LOCK_TIMEOUT_S = 30.0
# Values shorter than this are not searched for when error texts are redacted (a value such
# as "1" would blank every digit).
REDACT_MIN_CHARS = 4


@dataclasses.dataclass(frozen=True)
class SecretInfo:
    """One secret of the store, as ``Secret.objects.list()`` returns it: never its values.

    Attributes:
        name: the secret's name (what ``Secret.from_name`` takes).
        keys: the environment variables it sets, sorted.
        created_at: when it was first created (UTC).
        updated_at: when its pairs were last replaced (UTC).
    """

    name: str
    keys: tuple[str, ...]
    created_at: datetime
    updated_at: datetime


def create_fix(name: str) -> str:
    """How to create the secret ``name``, as an error's fix says it."""
    return f"apothic secret create {name} KEY=VALUE"


class MissingSecretsError(NotFoundError):
    """Secrets a function names are not in the store (``names``, in the function's order)."""

    def __init__(self, names: list[str], path: Path) -> None:
        self.names = names
        self.path = path
        which = (f"secret {names[0]!r} is" if len(names) == 1
                 else "secrets " + ", ".join(repr(n) for n in names) + " are")
        fixes = "; ".join(f"`{create_fix(n)}`" for n in names)
        super().__init__(
            f"{which} not in the secret store {path}. Fix: create it where the control worker reads it: "
            f"{fixes} (or apothic.Secret.objects.create(name, {{KEY: VALUE}}))."
        )


class SecretExistsError(InvalidError):
    """A secret of that name is already in the store (and neither replacing nor keeping it was asked)."""


def name_problems(name: Any) -> list[str]:
    """The problem line of a bad secret name (none for a good one)."""
    if isinstance(name, str) and NAME_RE.match(name):
        return []
    return [format_problem("name", name, NAME_ALLOWED, "rename it, e.g. Secret.from_name('HF_TOKEN')",
                           "invalid name")]


def pair_problems(values: Any) -> list[str]:
    """Every problem of a secret's pairs; a value is never shown, only its key and length."""
    if not isinstance(values, Mapping):
        return [format_problem("env_dict", f"<{type(values).__name__}>", "a dict of KEY: VALUE strings",
                               "give e.g. {'HF_TOKEN': '...'}", "not a dict")]
    if not values:
        return [format_problem("env_dict", {}, "at least one KEY: VALUE pair", "give e.g. {'HF_TOKEN': '...'}",
                               "no pairs")]
    problems = []
    for key, value in values.items():
        if not isinstance(key, str):
            problems.append(format_problem("key", key, KEY_ALLOWED, "give the key as a string", "not a string"))
            continue
        shown = key if len(key) <= 80 else f"{key[:60]}... ({len(key)} characters)"
        if len(key) > MAX_KEY_CHARS or not KEY_RE.fullmatch(key):
            guess = re.sub(r"\W", "_", key.strip())[:MAX_KEY_CHARS]
            guess = "_" + guess if guess[:1].isdigit() else guess
            fix = f"write {guess!r}" if guess and KEY_RE.fullmatch(guess) and guess != key else "rename the key"
            problems.append(format_problem("key", shown, KEY_ALLOWED, fix, "not an environment variable name"))
        elif key.upper().startswith(RESERVED_PREFIX):
            fix = f"rename it, e.g. {key[len(RESERVED_PREFIX):] or 'TOKEN'!r}"
            problems.append(format_problem("key", shown, KEY_ALLOWED, fix, "reserved for the runtime's own variables"))
        if not isinstance(value, str):
            problems.append(f"  - {shown} = <a value of type {type(value).__name__}>: not a string; "
                            f"allowed: {VALUE_ALLOWED}. Fix: give the value as a string.")
        elif "\0" in value or len(value) > MAX_VALUE_CHARS:
            what = "contains a NUL character" if "\0" in value else "too long"
            fix = "remove the NUL characters" if "\0" in value else "put large data in a volume or a bucket instead"
            problems.append(f"  - {shown} = <hidden, {len(value)} characters>: {what}; allowed: {VALUE_ALLOWED}. "
                            f"Fix: {fix}.")
    return problems


def check_secret(name: Any, values: Any, where: str = "") -> None:
    """Raise :class:`InvalidError` listing every problem of a secret's name and pairs."""
    raise_problems(where or f"secret {show(name)}", name_problems(name) + pair_problems(values))


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time(text: Any) -> datetime:
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return datetime.fromtimestamp(0, timezone.utc)


_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    with _thread_locks_guard:
        return _thread_locks.setdefault(str(path), threading.Lock())


class SecretStore:
    """The store file at ``path`` (see the module docstring for its format and protection)."""

    def __init__(self, path: Path, *, private_folder: bool = False) -> None:
        """``private_folder``: the folder is the store's own (the default one): kept at 0700."""
        self.path = Path(path)
        self.private_folder = private_folder

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def __repr__(self) -> str:
        return f"SecretStore({str(self.path)!r})"

    # --- reading ---

    def _problem(self, what: str, fix: str) -> InvalidError:
        return InvalidError(f"the secret store {self.path}: {what}. Fix: {fix}.")

    def _load(self) -> dict[str, dict[str, Any]]:
        """The ``secrets`` mapping of the file ({} when there is no file yet)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise self._problem(
                f"cannot be read ({e.strerror})",
                "run the CLI and the control worker as the user that owns it, or point secrets.file "
                "(APOTHIC_SECRETS_FILE) at a store that user owns",
            ) from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise self._problem("is not a regular file", "point secrets.file (APOTHIC_SECRETS_FILE) at a file")
            if st.st_mode & 0o077:
                raise self._problem(
                    f"others may read it (mode {stat.S_IMODE(st.st_mode):04o}); allowed: mode 0600, its owner only",
                    f"chmod 600 {self.path}",
                )
            raw = f.read()
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise self._problem("is not UTF-8 text", "restore it from a backup, or delete it and create the "
                                "secrets again") from None
        except json.JSONDecodeError as e:
            raise self._problem(f"is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})",
                                "restore it from a backup, or delete it and create the secrets again") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("secrets"), dict):
            raise self._problem(f"is not an Apothic secret store (no \"format\": {FORMAT!r} and \"secrets\")",
                                "point secrets.file (APOTHIC_SECRETS_FILE) at the store, or move this file away")
        if data.get("version") != VERSION:
            raise self._problem(f"has version {show(data.get('version'))}; this Apothic reads version {VERSION}",
                                "use the Apothic release that wrote it")
        secrets: dict[str, dict[str, Any]] = data["secrets"]
        for name, entry in secrets.items():
            values = entry.get("values") if isinstance(entry, dict) else None
            if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
                raise self._problem(f"the entry of secret {name!r} is damaged",
                                    f"delete it (`apothic secret delete {name}`) and create it again")
        return secrets

    def list(self) -> list[SecretInfo]:
        """Every secret's name and keys (never values), by name."""
        return [
            SecretInfo(name, tuple(sorted(entry["values"])), _time(entry.get("created_at")),
                       _time(entry.get("updated_at")))
            for name, entry in sorted(self._load().items())
        ]

    def read(self, name: str) -> dict[str, str]:
        """The pairs of secret ``name``; :class:`MissingSecretsError` when it is not there."""
        return self.resolve([name])

    def resolve(self, names: Iterable[str]) -> dict[str, str]:
        """The pairs of every named secret, merged in order (a later secret's key wins).

        Raises:
            MissingSecretsError: naming every secret that is not in the store.
            InvalidError: the store cannot be read or is damaged.
        """
        wanted = list(names)
        secrets = self._load() if wanted else {}
        missing = [n for n in wanted if n not in secrets]
        if missing:
            raise MissingSecretsError(missing, self.path)
        env: dict[str, str] = {}
        for name in wanted:
            env.update(secrets[name]["values"])
        return env

    # --- writing ---

    def create(self, name: str, values: Mapping[str, str], *, overwrite: bool = False,
               allow_existing: bool = False) -> str:
        """Add secret ``name`` with ``values``; returns ``"created"``, ``"replaced"`` or ``"kept"``.

        An existing secret is replaced with ``overwrite``, left as it is with
        ``allow_existing``, and otherwise refused (:class:`SecretExistsError`).
        """
        check_secret(name, values)
        if overwrite and allow_existing:
            raise InvalidError(f"secret {name!r}: overwrite=True and allow_existing=True contradict each other; "
                               "allowed: at most one of them. Fix: drop one.")
        pairs = {str(k): str(v) for k, v in values.items()}
        with self._locked():
            secrets = self._load()
            old = secrets.get(name)
            if old is not None and allow_existing:
                return "kept"
            if old is not None and not overwrite:
                raise SecretExistsError(
                    f"secret {name!r} already exists (keys {', '.join(sorted(old['values']))}); allowed: a name not "
                    f"in the store. Fix: replace it with `apothic secret create {name} ... --force` (SDK: "
                    f"overwrite=True), or delete it first."
                )
            now = _now()
            secrets[name] = {"values": pairs, "created_at": old.get("created_at", now) if old else now,
                             "updated_at": now}
            self._write(secrets)
        return "replaced" if old is not None else "created"

    def delete(self, name: str, *, allow_missing: bool = False) -> bool:
        """Remove secret ``name``; returns whether it was there (missing: :class:`NotFoundError`
        unless ``allow_missing``)."""
        raise_problems(f"secret {show(name)}", name_problems(name))
        with self._locked():
            secrets = self._load()
            if name not in secrets:
                if allow_missing:
                    return False
                raise NotFoundError(
                    f"secret {name!r} is not in the secret store {self.path}. Fix: check the name with "
                    "`apothic secret list`, or pass --allow-missing (SDK: allow_missing=True)."
                )
            del secrets[name]
            self._write(secrets)
        return True

    def _folder(self) -> Path:
        """The store's folder, made private (0700) when Apothic creates it or owns it."""
        folder = self.path.parent
        try:
            if not folder.exists():
                folder.mkdir(parents=True, mode=0o700)
                folder.chmod(0o700)  # mkdir's mode is reduced by the umask; 0700 is what we want
            elif self.private_folder and stat.S_IMODE(folder.stat().st_mode) != 0o700:
                folder.chmod(0o700)
            mode = folder.stat().st_mode
        except OSError as e:
            raise self._problem(f"its folder cannot be made or read ({e.strerror})",
                                "point secrets.file (APOTHIC_SECRETS_FILE) at a folder this user can write") from None
        if mode & 0o022:
            raise self._problem(
                f"its folder {folder} may be written by others (mode {stat.S_IMODE(mode):04o}), who could replace "
                "the store", f"chmod 700 {folder}, or keep the store in a private folder")
        return folder

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive: one writer at a time, across threads and processes (``flock``)."""
        self._folder()
        with _thread_lock(self.path):
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
            except OSError as e:
                raise self._problem(f"its lock file {self.lock_path} cannot be opened ({e.strerror})",
                                    "make the folder writable by this user") from None
            try:
                deadline = time.monotonic() + LOCK_TIMEOUT_S
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise ApothicError(
                                f"the secret store {self.path}: another writer has held {self.lock_path} for "
                                f"{LOCK_TIMEOUT_S:g} s. Fix: wait for it, or end the process that holds it "
                                f"(`fuser {self.lock_path}`)."
                            ) from None
                        time.sleep(0.02)
                yield
            finally:
                os.close(fd)  # releases the lock

    def _write(self, secrets: dict[str, dict[str, Any]]) -> None:
        """Replace the file atomically with ``secrets`` (mode 0600); called under the lock."""
        folder = self._folder()
        text = json.dumps({"format": FORMAT, "version": VERSION, "secrets": secrets}, indent=1, sort_keys=True,
                          ensure_ascii=False)
        tmp = folder / f".{self.path.name}.{os.getpid()}.{_random.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        try:
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass  # the rename is done; the folder's own flush is best effort (some filesystems refuse it)


def encoded_forms(value: str) -> list[str]:
    """``value`` as it would appear in JSON (escaped) or in base64 at any offset: what a leak
    check or a redaction must look for besides the value itself."""
    raw = value.encode("utf-8")
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    for shift in range(3):
        text = base64.b64encode(b"\0" * shift + raw).decode()
        start = (shift * 4 + 2) // 3 if shift else 0  # characters that also encode the padding bytes
        end = 4 * ((shift + len(raw)) // 3)  # the last group may mix in what follows
        if end - start >= REDACT_MIN_CHARS:
            forms.add(text[start:end])
    return sorted((f for f in forms if f), key=len, reverse=True)


def redact(text: str, values: Iterable[str]) -> str:
    """``text`` with every secret value (and its JSON or base64 forms) replaced by ``<secret>``."""
    for value in values:
        if len(value) >= REDACT_MIN_CHARS:
            for form in encoded_forms(value):
                if form in text:
                    text = text.replace(form, "<secret>")
    return text
