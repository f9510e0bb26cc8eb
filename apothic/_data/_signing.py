"""Signed payloads: only this control plane's processes can send what its workers run.

A workflow carries pickled code and arguments that the control worker and the function
containers unpickle, so whoever could start a workflow on the Temporal server could run code
as the worker's user. Every Temporal client Apothic makes (``_control._client.connect``: the
SDK and the CLI, the control worker, the function containers) therefore has a
:class:`SigningCodec` in its data converter.

- **Sending**, it adds one metadata entry to each payload, ``apothic-signature`` =
  ``v1:<key id>:<HMAC-SHA256, hex>``, computed under the key over every other metadata entry
  (``encoding`` among them) and the data. ``data`` and ``encoding`` stay as they were: the
  Temporal UI and ``temporal workflow show`` show the JSON as before.
- **Receiving**, it checks the entry and removes it before anything converts the payload. A
  payload without it, with a damaged one, or one that does not match is refused and logged,
  never decoded. (The one payload the Temporal server makes itself, the details of an
  activity cancelled before it started, ``"ACTIVITY_ID_NOT_STARTED"``, passes unsigned, as
  is.) In the control worker (``in_workflows``) the refusal is a non-retryable
  ``ApplicationError`` of type ``PayloadRefused``: the workflow task it arrived in runs no
  workflow code and the workflow fails at once (whether it started the workflow, or came as
  a signal, an update or an activity's result). A payload signed with *another* key (a
  process of this control plane given a different key) fails the workflow task instead,
  which Temporal retries: once every process has the same key, the workflow goes on. In a
  client the refusal is :class:`PayloadRefusedError` (a ``PermissionDeniedError``); in a
  container an activity whose input is refused fails without running.

The key is 32 random bytes (or more), written as hex; its id (the first 16 hex digits of a
hash of it) names it in signatures and messages. Which key (:func:`payload_key`), first match:

1. ``APOTHIC_PAYLOAD_KEY`` (the hex) or ``APOTHIC_PAYLOAD_KEY_FILE`` (a file holding it, mode
   0600, in a folder others cannot write). Function containers get the worker's key this way,
   in their environment (``activities/_hosts.py``).
2. With the embedded dev server, or a Temporal server on this host (a loopback address):
   ``$APOTHIC_HOME/payload.key``, made on first use (mode 0600, written whole then linked into
   place, so that processes racing to make it all end with the one that got there first).
3. A server on another host with an API key or a client certificate: no signing (the server
   authenticates its clients). Set a key to sign there too.
4. A server on another host without either: an ``InvalidError`` naming the fix.

Payloads are signed, not encrypted: whoever reads the history reads the values. Whoever can
read the key (the key file, the environment of a worker or a container) can sign.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import stat
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, PayloadCodec
from temporalio.exceptions import ApplicationError

from .._control._config import Settings, apothic_home
from .._control._config_rules import PAYLOAD_KEY_MAKE, host_port, payload_key_problem
from ..exceptions import InvalidError, PermissionDeniedError

log = logging.getLogger("apothic.signing")

SIGNATURE = "apothic-signature"  # the metadata entry
KEY_ENV = "APOTHIC_PAYLOAD_KEY"
KEY_FILE_ENV = "APOTHIC_PAYLOAD_KEY_FILE"
KEY_FILENAME = "payload.key"
REFUSED_TYPE = "PayloadRefused"  # the ApplicationError type a refusal fails a workflow with
_VERSION = "v1"
_DOMAIN = b"apothic payload signature v1\0"
_KEY_ID = b"apothic payload key id\0"
# Payloads the Temporal server makes itself, which no client signs; each decodes to a constant
# string. (The details of an activity cancelled before it started.)
SERVER_MADE = frozenset({(b"json/plain", b'"ACTIVITY_ID_NOT_STARTED"')})


class PayloadRefusedError(PermissionDeniedError):
    """A payload that is not signed with this control plane's key was refused (never decoded)."""


@dataclasses.dataclass(frozen=True)
class PayloadKey:
    """The key of one control plane; ``origin`` says where it came from (for messages)."""

    secret: bytes = dataclasses.field(repr=False)
    origin: str

    @property
    def key_id(self) -> str:
        return hashlib.sha256(_KEY_ID + self.secret).hexdigest()[:16]

    def env(self) -> dict[str, str]:
        """The variables that give a child process (a container) this key."""
        return {KEY_ENV: self.secret.hex()}


# --- which key ---


def payload_key(settings: Settings) -> PayloadKey | None:
    """The key ``settings`` call for (see the module docstring for the order); None: unsigned.

    Raises:
        InvalidError: the key file is unreadable, others may read it or replace it, or holds
            no key; or the server is on another host and neither a key nor credentials are set.
    """
    if settings.payload_key:
        return PayloadKey(bytes.fromhex(settings.payload_key), KEY_ENV)
    if settings.payload_key_file:
        path = Path(settings.payload_key_file)
        _check_folder(path)
        return read_key_file(path, f"{KEY_FILE_ENV}={path}")
    if settings.embedded or on_this_host(settings.address):
        fresh = not (apothic_home() / KEY_FILENAME).exists()
        key = home_key()
        db = settings.server.db_path() if settings.embedded and settings.server.db_filename not in ("", ":memory:") else None
        if fresh and db is not None and db.exists():
            log.warning("made the payload key %s; what the dev server's database %s holds from before (jobs, apps, "
                        "schedules) is not signed with it and cannot be read. Fix: run `apothic stop`, remove that "
                        "database, and deploy again.", key.origin, db)
        return key
    if settings.api_key or settings.tls_cert:
        return None
    raise InvalidError(
        f"the Temporal server at {settings.address} is on another host, and no payload key is set: Apothic "
        "signs what it sends with a key its workers and containers check, so that only this control plane's "
        "clients can run code, and with a server elsewhere every process must be given the same key. Fix: make "
        f"one with {PAYLOAD_KEY_MAKE} and give every client and worker {KEY_FILE_ENV}=<its path> (or its text "
        f"as {KEY_ENV}); or have the server authenticate its clients (APOTHIC_TEMPORAL_API_KEY, or a client "
        "certificate: APOTHIC_TEMPORAL_TLS_CERT and APOTHIC_TEMPORAL_TLS_KEY)."
    )


def on_this_host(address: str) -> bool:
    """Whether ``address`` (``host:port``) names this host (a loopback address or ``localhost``)."""
    parsed = host_port(address)
    if parsed is None:
        return False
    host = parsed[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def home_key() -> PayloadKey:
    """``$APOTHIC_HOME/payload.key``, made on first use."""
    path = apothic_home() / KEY_FILENAME
    _check_folder(path)
    if not path.exists():
        _create(path)
    return read_key_file(path, str(path))


def _problem(path: Path, what: str, fix: str) -> InvalidError:
    return InvalidError(f"the payload key {path}: {what}. Fix: {fix}.")


def _check_folder(path: Path) -> None:
    mode = path.parent.stat().st_mode
    if mode & 0o022 and not mode & stat.S_ISVTX:
        raise _problem(path, f"its folder may be written by others (mode {stat.S_IMODE(mode):04o}), who could "
                       "replace the key", f"chmod 700 {path.parent}, or keep the key in a private folder")


def _create(path: Path) -> None:
    """Write a new key to ``path`` unless one is there: whole, then linked into place, so that a
    reader never sees half a key and, of racing creators, the first wins and the rest read it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return  # another process made it first: its key is the one
        except OSError as e:
            raise _problem(path, f"cannot be made here ({e.strerror}: the key is written whole, then hard-linked "
                           "into place)", f"write one yourself: {PAYLOAD_KEY_MAKE.replace('payload.key', str(path))}"
                           f", or set {KEY_FILE_ENV}") from None
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


def read_key_file(path: Path, origin: str) -> PayloadKey:
    """The key in ``path``: a regular file of this user (or root), mode 0600, holding hex."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise _problem(path, f"cannot be read ({e.strerror})",
                       f"run every Apothic process as the user that owns it, or point {KEY_FILE_ENV} at a key this "
                       "user owns") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _problem(path, "is not a regular file", f"point {KEY_FILE_ENV} at a file, or move it away")
        if st.st_uid not in (os.geteuid(), 0):
            raise _problem(path, f"belongs to another user (uid {st.st_uid})",
                           f"use a key file of this user (chown it, or point {KEY_FILE_ENV} at another)")
        if st.st_mode & 0o077:
            raise _problem(path, f"others may read it (mode {stat.S_IMODE(st.st_mode):04o}); allowed: mode 0600, "
                           "its owner only", f"chmod 600 {path}, and make a new key if others read it")
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        text = "?"
    problem = payload_key_problem(text) or ("" if text else "it is empty")
    if problem:
        raise _problem(path, f"holds no payload key ({problem})",
                       f"write one there with {PAYLOAD_KEY_MAKE.replace('payload.key', str(path))}, the same in "
                       "every process of the control plane")
    return PayloadKey(bytes.fromhex(text), origin)


# --- the codec ---


def _mac(secret: bytes, payload: Payload) -> str:
    h = hmac.new(secret, _DOMAIN, hashlib.sha256)
    items = sorted((k, v) for k, v in payload.metadata.items() if k != SIGNATURE)
    h.update(struct.pack(">I", len(items)))
    for k, v in items:
        kb = k.encode()
        h.update(struct.pack(">IQ", len(kb), len(v)))
        h.update(kb)
        h.update(v)
    data = payload.data
    h.update(struct.pack(">Q", len(data)))
    h.update(data)
    h.update(struct.pack(">I", len(payload.external_payloads)))
    for ext in payload.external_payloads:
        raw = ext.SerializeToString(deterministic=True)
        h.update(struct.pack(">Q", len(raw)))
        h.update(raw)
    return h.hexdigest()


class SigningCodec(PayloadCodec):
    """Signs every payload sent and refuses every payload received that it did not sign.

    Args:
        key: the control plane's key.
        in_workflows: the control worker's codec: a refusal fails the workflow (see the module
            docstring); otherwise it raises :class:`PayloadRefusedError`.
    """

    def __init__(self, key: PayloadKey, *, in_workflows: bool = False) -> None:
        self.key = key
        self.in_workflows = in_workflows
        self._secret = key.secret
        self._tag = f"{_VERSION}:{key.key_id}:".encode()

    def sign(self, payload: Payload) -> Payload:
        out = Payload()
        out.CopyFrom(payload)
        out.metadata[SIGNATURE] = self._tag + _mac(self._secret, payload).encode()
        return out

    def verify(self, payload: Payload) -> Payload:
        """``payload`` without its signature; raises when it has none, or one that is not ours."""
        raw = payload.metadata.get(SIGNATURE)
        if raw is None:
            made = (payload.metadata.get("encoding"), payload.data)
            if len(payload.metadata) == 1 and made in SERVER_MADE and not payload.external_payloads:
                return payload  # nothing in it but the server's own constant
            raise self._refused(
                "it is not signed. It came from a Temporal client without Apothic's payload key (another user's, "
                "a plain Temporal client or CLI), or was made before Apothic signed payloads",
                "send it with Apothic from a process that has this control plane's key (the same APOTHIC_HOME, "
                f"or {KEY_ENV}/{KEY_FILE_ENV}). What an Apothic that did not sign wrote (jobs, apps, schedules) "
                "cannot be read: run `apothic stop`, remove $APOTHIC_HOME/temporal.db (with an external cluster, "
                "use a new namespace), and deploy again")
        parts = raw.decode("ascii", "replace").split(":")
        if len(parts) != 3 or parts[0] != _VERSION or not hmac.compare_digest(
            parts[2].encode(), _mac(self._secret, payload).encode()
        ):
            if len(parts) == 3 and parts[0] == _VERSION and parts[1] != self.key.key_id:
                raise self._refused(
                    f"it is signed with another key (id {parts[1]}) than this process's (id {self.key.key_id}, "
                    f"from {self.key.origin})",
                    f"give every process of this control plane the same key ({KEY_ENV} or {KEY_FILE_ENV}, or "
                    "the same APOTHIC_HOME on one host)", other_key=True)
            raise self._refused(
                "its signature is damaged or does not match its content (changed after signing, or forged)",
                "send it with Apothic from a process that has this control plane's key")
        out = Payload()
        out.CopyFrom(payload)
        del out.metadata[SIGNATURE]
        return out

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.sign(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.verify(p) for p in payloads]

    def _refused(self, why: str, fix: str, other_key: bool = False) -> Exception:
        message = f"refused a payload: {why}; nothing of it was decoded. Fix: {fix}."
        log.warning("%s", message)
        if self.in_workflows and not other_key:
            return ApplicationError(message, type=REFUSED_TYPE, non_retryable=True)
        return PayloadRefusedError(message)


def data_converter(settings: Settings, *, in_workflows: bool = False) -> DataConverter:
    """The data converter of a client for ``settings``: Temporal's default, signing with the
    key :func:`payload_key` finds (none: the default as it is)."""
    key = payload_key(settings)
    if key is None:
        return DataConverter.default
    return DataConverter(payload_codec=SigningCodec(key, in_workflows=in_workflows))


def container_env(codec: Any) -> dict[str, str]:
    """The variables that give a container the key ``codec`` (a client's) signs with; {} unsigned."""
    return codec.key.env() if isinstance(codec, SigningCodec) else {}
