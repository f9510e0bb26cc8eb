"""The codec server: Temporal's remote-codec HTTP protocol, rendering Apothic's payloads.

``POST .../decode`` takes ``{"payloads": [{"metadata": {k: base64}, "data": base64}]}`` (the
``Payloads`` message in proto3 JSON; an ``X-Namespace`` header may name the namespace, which
changes nothing here) and answers the same shape with each payload readable
(:func:`._render.decode_payload`). ``POST .../encode`` answers the payloads unchanged: what a
person types into the Web UI (a signal's input) is already JSON, which Apothic's workflows
read as it is. Only the last part of the path counts, so the server can sit under a prefix.

The Web UI calls it from the browser: requests from the UI's origins get CORS headers; a
request whose ``Origin`` is another site is refused, and a POST must be ``application/json``
(which a browser cannot send to another site without a preflight), so that no web page can
have the server unpickle what it sends. Clients that send no ``Origin`` (the ``temporal`` CLI)
are served. The server listens on the loopback address by default.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from ._render import decode_payload

# A decode request larger than this is refused (the UI sends a page of history at a time).
MAX_BODY_BYTES = 64 * 1024 * 1024
ALLOWED_HEADERS = "content-type, x-namespace, authorization"
# The signing codec's check of one payload (``SigningCodec.verify``): the payload without its
# signature, or an exception.
Verify = Callable[[Payload], Payload]


def ui_origins(ip: str, ui_port: int) -> list[str]:
    """The origins the dev server's Web UI is served from."""
    hosts = dict.fromkeys([ip if ip not in ("0.0.0.0", "::") else "127.0.0.1", "127.0.0.1", "localhost"])
    return [f"http://{host}:{ui_port}" for host in hosts]


class CodecServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], origins: Iterable[str], verify: Verify | None = None) -> None:
        self.origins = frozenset(o.rstrip("/") for o in origins)
        self.verify = verify
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: CodecServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would flood the log: the UI decodes page by page

    def _origin_ok(self) -> tuple[bool, str]:
        origin = self.headers.get("Origin")
        return origin is None or origin.rstrip("/") in self.server.origins, origin or ""

    def _reply(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
        ok, origin = self._origin_ok()
        self.send_response(status)
        if origin and ok:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
            self.send_header("Access-Control-Allow-Headers", ALLOWED_HEADERS)
            self.send_header("Access-Control-Allow-Credentials", "true")
            self.send_header("Vary", "Origin")
        if body:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._reply(status, json.dumps({"error": message}).encode())

    def do_OPTIONS(self) -> None:
        ok, origin = self._origin_ok()
        if not ok:
            self._error(403, f"origin {origin} is not the Temporal Web UI's")
            return
        self._reply(204)

    def do_GET(self) -> None:
        self._reply(200, b"Apothic codec server: POST /decode, POST /encode\n", "text/plain")

    def do_POST(self) -> None:
        ok, origin = self._origin_ok()
        if not ok:
            self._error(403, f"origin {origin} is not the Temporal Web UI's")
            return
        action = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if action not in ("decode", "encode"):
            self._error(404, f"no endpoint {self.path!r}: POST .../decode or .../encode")
            return
        if self.headers.get_content_type() != "application/json":
            self._error(415, "send the payloads as application/json")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self._error(413, f"a request body of 0 to {MAX_BODY_BYTES} bytes is allowed")
            return
        try:
            payloads = json_format.Parse(self.rfile.read(length) or b"{}", Payloads())
        except json_format.ParseError as e:
            self._error(400, f"not a Payloads message in proto3 JSON: {e}")
            return
        if action == "decode":
            payloads = Payloads(payloads=[decode_payload(p, self.server.verify) for p in payloads.payloads])
        self._reply(200, json_format.MessageToJson(payloads, indent=None).encode())


def start(ip: str, port: int, origins: Iterable[str], verify: Verify | None = None) -> CodecServer:
    """A running codec server (in a thread of this process); ``shutdown()`` stops it."""
    server = CodecServer((ip, port), origins, verify)
    threading.Thread(target=server.serve_forever, name="apothic-codec", daemon=True).start()
    return server


def serve(ip: str, port: int, origins: Iterable[str], verify: Verify | None = None) -> None:
    """Serve in the foreground until interrupted (SIGTERM or Ctrl-C)."""
    import signal

    server = CodecServer((ip, port), origins, verify)
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=server.shutdown).start())
    keyed = "payloads signed with this control plane's key" if verify else "no payload key: values not unpickled"
    print(f"apothic codec server on {server.url} (for {', '.join(sorted(server.origins))}; {keyed})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.stdout.flush()
