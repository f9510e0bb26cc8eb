"""``apothic codec-server``: run the codec server in the foreground."""

from __future__ import annotations

import argparse
import errno
from typing import Any

DESCRIPTION = """\
Serve Temporal's remote-codec protocol (POST /decode, /encode) so that the Temporal Web UI and
`temporal workflow show --codec-endpoint URL` show Apothic's payloads readably: arguments,
results, errors and checkpoints as JSON (or by their fields, or a bounded repr), with their type
and size; blob references with their size. Values are unpickled without importing the user's
modules and without running their methods; a type that cannot be loaded here is named as such.
The embedded dev server starts one on server.codec_port (temporal-dev.yaml) by itself."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="port to listen on (default: server.codec_port, 8234)")
    parser.add_argument("--ip", help="address to listen on (default: server.ip, 127.0.0.1)")
    parser.add_argument("--origin", action="append", default=[], metavar="URL",
                        help="another Web UI origin to serve (repeatable), e.g. https://temporal.example.com")


def add_codec_parser(sub: Any) -> None:
    p = sub.add_parser("codec-server", help="show Apothic's payloads readably in the Temporal Web UI and CLI",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._control._config import load_settings
    from ..exceptions import ApothicError, InvalidError
    from ._background import codec_host
    from ._server import serve, ui_origins

    settings = load_settings()
    server = settings.server
    port = server.codec_port if args.port is None else args.port
    if not 1 <= port <= 65535:
        raise InvalidError(f"--port={port}: allowed: an integer from 1 to 65535. Fix: e.g. --port 8234.")
    origins = ui_origins(server.ip, server.ui_port) + [str(o) for o in args.origin]
    for origin in args.origin:
        if not str(origin).startswith(("http://", "https://")):
            raise InvalidError(f"--origin={origin!r}: allowed: a URL such as http://127.0.0.1:8233. "
                               "Fix: give the Web UI's address with its scheme.")
    ip = args.ip or codec_host(server)
    try:
        serve(ip, port, origins, verify=signature_check(settings))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ApothicError(f"port {port} on {ip} is in use (another codec server?). Fix: stop it "
                               "(`apothic stop`), or use another --port (server.codec_port in temporal-dev.yaml).") from None
        raise
    return 0


def signature_check(settings: Any) -> Any:
    """The check of this control plane's payload signatures (None: no key, values are then
    shown without being unpickled). A refusal is said in the rendering, not logged."""
    import logging

    from .._data._signing import SigningCodec, payload_key
    from ..exceptions import InvalidError

    try:
        key = payload_key(settings)
    except InvalidError as e:
        print(f"apothic codec-server: no payload key ({e}); values will not be unpickled", flush=True)
        return None
    if key is None:
        return None
    logging.getLogger("apothic.signing").setLevel(logging.ERROR)
    return SigningCodec(key).verify


def main(argv: list[str] | None = None) -> int:
    import sys

    parser = argparse.ArgumentParser(prog="apothic codec-server", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - one line, as the apothic command prints it
        print(f"apothic codec-server: error: {e}", file=sys.stderr)
        return 1
