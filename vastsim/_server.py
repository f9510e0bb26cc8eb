"""The HTTP side of the simulator: routing, authentication, admin endpoints, and `Simulator`.

Vast API routes (paths with or without the trailing slash):

=======  =====================================  ==========================================
POST     /api/v0/bundles/                       search offers (``GET ?q=<json>`` also works)
PUT      /api/v0/asks/{offer_id}/               create an instance
GET      /api/v0/instances/{id}/                read one (``{"instances": null}`` if gone)
PUT      /api/v0/instances/{id}/                ``{"state": ...}`` / ``{"label": ...}``
DELETE   /api/v0/instances/{id}/                destroy (404 ``not_found`` if gone)
GET      /api/v0/instances/                     list, deprecated v0 form
DELETE   /api/v0/instances/                     bulk destroy ``{"instance_ids": [...]}``
GET      /api/v1/instances/                     list, paged (select_filters, order_by, ...)
PUT      /api/v0/instances/request_logs/{id}/   logs: answers a ``result_url``
POST     /api/v0/volumes/search/                search volume offers
PUT      /api/v0/volumes/                       create a volume
GET      /api/v0/volumes                        list volumes
DELETE   /api/v0/volumes/                       delete a volume (``?id=`` or body)
GET      /api/v0/users/current/                 the account
GET      /api/v0/instances/filters/             distinct values (the CLI's table)
GET      /api/v0/gpu_names/unique/              GPU names (no auth; the CLI reads it)
=======  =====================================  ==========================================

Auth is ``Authorization: Bearer <key>`` or the legacy ``?api_key=<key>``; a missing or wrong
key answers 401 ``{"success": false, "error": "auth_error", "msg": "Invalid user key"}``.
JSON answers carry exactly ``Content-Type: application/json`` (the official CLI compares it).

Admin routes (not Vast's; no auth): ``GET /_sim/state``, ``GET /_sim/requests``,
``GET /_sim/catalogue``, ``POST /_sim/faults`` with ``{"kind": <fault>, ...arguments}`` where
kind is a fault method of :class:`Simulator` (``rate_limit``, ``fail_requests``,
``take_offer``, ``stick_loading``, ``host_dies``, ``lose_create_response``, ``ignore_filter``,
``fail_pull``, ``clear_faults``), ``DELETE /_sim/faults`` (clear), ``GET /_sim/instances/{id}/log`` and
``GET /_sim/logs/{token}`` (the ``result_url`` of a log request).
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ._core import Reply, SimCore, error
from ._runners import docker_available

_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p + r"/?$"), name) for m, p, name in (
        ("POST", r"^/api/v0/bundles", "search"),
        ("GET", r"^/api/v0/bundles", "search_get"),
        ("PUT", r"^/api/v0/asks/(\d+)", "create"),
        ("GET", r"^/api/v0/instances/filters", "instance_filters"),
        ("PUT", r"^/api/v0/instances/request_logs/(\d+)", "request_logs"),
        ("GET", r"^/api/v0/instances/(\d+)", "show"),
        ("PUT", r"^/api/v0/instances/(\d+)", "manage"),
        ("DELETE", r"^/api/v0/instances/(\d+)", "destroy"),
        ("GET", r"^/api/v0/instances", "list_v0"),
        ("DELETE", r"^/api/v0/instances", "destroy_many"),
        ("GET", r"^/api/v1/instances", "list_v1"),
        ("POST", r"^/api/v0/volumes/search", "volume_search"),
        ("PUT", r"^/api/v0/volumes", "volume_create"),
        ("GET", r"^/api/v0/volumes", "volume_list"),
        ("DELETE", r"^/api/v0/volumes", "volume_delete"),
        ("GET", r"^/api/v0/users/current", "user"),
        ("GET", r"^/api/v0/gpu_names/unique", "gpu_names"),
    )
]
_NO_AUTH = frozenset({"gpu_names"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sim: Simulator) -> None:
        self.sim = sim
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vastsim/1"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        sim = self.server.sim
        if url.path.startswith("/_sim/"):
            self._send(sim._admin(method, url.path, query, raw))
            return
        reply = sim._api(method, url.path, query, raw, self.headers.get("Authorization"))
        if reply.action == "drop":
            sim.record(method, url.path, 0, "dropped")
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        sim.record(method, url.path, reply.status, "delayed" if reply.action == "delay" else "")
        if reply.action == "delay":
            time.sleep(reply.delay_s)
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        if reply.content_type == "application/json":
            data = json.dumps(reply.body).encode()
        else:
            data = str(reply.body).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class Simulator(SimCore):
    """A simulated Vast.ai REST API on a loopback port, with real instances and fault injection.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with Simulator(catalogue_seed=1, loading_s=0.2) as sim:
            os.environ["VAST_URL"], os.environ["VAST_API_KEY"] = sim.url, sim.api_key
            ...

    Args:
        host: a loopback address to bind (``127.0.0.1`` by default); others are refused.
        port: the TCP port; 0 picks a free one.
        api_key: the key (or list of keys) the API accepts.
        catalogue_seed: seed of the offer catalogue (same seed, same offers and ids).
        machines: number of machines in the catalogue (about 1.2 offers each).
        instance_mode: ``"process"`` (a local process group) or ``"docker"`` (``docker run`` of
            the requested image, which must already be present locally).
        loading_s: seconds an instance stays ``loading`` before its command starts.
        search_limit: the most offers one search returns, and the default ``limit`` (64: the
            cap a third-party client observed on the real service; the true value is not
            documented).
        data_dir: where instance logs, working directories and volumes go; a temporary
            directory, removed on :meth:`stop`, when None.
        inherit_env: give instance processes this process's whole environment instead of only
            PATH, LANG, LC_ALL, TZ and TMPDIR.
        docker: the docker client program, for ``instance_mode="docker"``.

    Limits: see the ``_core`` module docstring. The simulator is not hardened: bind it only to
    loopback and stop it when done; :meth:`stop` kills every instance it started.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> None:
        if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the simulator binds loopback addresses only, got {host!r}")
        super().__init__(**kwargs)
        self.host = "127.0.0.1" if host == "localhost" else host
        self.port = int(port)
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None

    @property
    def api_key(self) -> str:
        """One accepted API key."""
        return sorted(self.api_keys)[0]

    @property
    def url(self) -> str:
        """The base URL (``http://127.0.0.1:PORT``), for ``VAST_URL``; "" before :meth:`start`."""
        return self.base_url

    def start(self) -> str:
        """Start serving in a background thread; returns the base URL.

        Raises:
            RuntimeError: ``instance_mode="docker"`` and ``docker info`` fails, or started twice.
        """
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        if self.instance_mode == "docker" and not docker_available(self.docker):
            self.shutdown_instances()  # removes the temporary data directory
            raise RuntimeError("instance_mode='docker' needs a reachable Docker engine (`docker info` failed)")
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{host}:{self.port}"
        self._serve_thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                              name="vastsim-http", daemon=True)
        self._serve_thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving, kill every instance's processes, and remove the temporary data."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._serve_thread is not None:
            self._serve_thread.join(timeout=5)
        self.shutdown_instances()

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ dispatch

    def _api(self, method: str, path: str, query: dict[str, str], raw: bytes, auth: str | None) -> Reply:
        route = None
        path_matched = False
        for m, pattern, name in _ROUTES:
            match = pattern.match(path)
            if match:
                path_matched = True
                if m == method:
                    route = (name, match.groups())
                    break
        if route is None:
            if path_matched:
                return error(405, "method_not_allowed", f"{method} is not allowed on {path}")
            return error(404, "not_found", f"No API endpoint {path}")
        name, groups = route
        injected = self.check_rules(method, path)
        if injected is not None:
            return injected
        if name not in _NO_AUTH and not self._authorized(auth, query):
            return error(401, "auth_error", "Invalid user key")
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return error(400, "invalid_args", "The request body is not JSON")
        ident = int(groups[0]) if groups else None
        if name == "search":
            return self.search(body if body is not None else {})
        if name == "search_get":
            try:
                q = json.loads(query.get("q") or "{}")
            except ValueError:
                return error(400, "invalid_args", "q must be URL-encoded JSON")
            return self.search(q)
        if name == "create":
            return self.create(ident, body if body is not None else {})
        if name in ("show", "destroy"):
            return getattr(self, name)(ident)
        if name in ("manage", "request_logs"):
            return getattr(self, name)(ident, body if body is not None else {})
        if name == "list_v1":
            return self.list_v1(query)
        if name == "destroy_many":
            return self.destroy_many(body)
        if name == "volume_search":
            return self.volume_search(body if body is not None else {})
        if name == "volume_create":
            return self.volume_create(body)
        if name == "volume_list":
            return self.volume_list(query.get("type"))
        if name == "volume_delete":
            return self.volume_delete(query.get("id") if query.get("id") is not None
                                      else (body or {}).get("id") if isinstance(body, dict) else None)
        return getattr(self, name)()

    def _authorized(self, header: str | None, query: dict[str, str]) -> bool:
        if header and header.startswith("Bearer "):
            return header[len("Bearer "):].strip() in self.api_keys
        return query.get("api_key") in self.api_keys

    def _admin(self, method: str, path: str, query: dict[str, str], raw: bytes) -> Reply:
        path = path.rstrip("/")
        if method == "GET" and path == "/_sim/state":
            return Reply(200, self.state())
        if method == "GET" and path == "/_sim/requests":
            return Reply(200, {"requests": self.requests()})
        if method == "GET" and path == "/_sim/catalogue":
            return Reply(200, {"offers": self.catalogue()})
        if path == "/_sim/faults" and method == "DELETE":
            self.clear_faults()
            return Reply(200, {"success": True})
        if path == "/_sim/faults" and method == "POST":
            try:
                spec = json.loads(raw or b"{}")
                kind = spec.pop("kind")
                if kind not in self.FAULTS:
                    raise ValueError(f"unknown fault kind {kind!r}; one of {list(self.FAULTS)}")
                getattr(self, kind)(**spec)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                return error(400, "invalid_args", str(e))
            return Reply(200, {"success": True})
        m = re.fullmatch(r"/_sim/instances/(\d+)/log", path)
        if m and method == "GET":
            try:
                return Reply(200, self.instance_log(int(m.group(1))), content_type="text/plain")
            except KeyError:
                return error(404, "not_found", "No such instance")
        m = re.fullmatch(r"/_sim/logs/([\w-]+)", path)
        if m and method == "GET":
            text = self.log_by_token(m.group(1))
            if text is None:
                return error(404, "not_found", "No such log")
            return Reply(200, text, content_type="text/plain")
        return error(404, "not_found", f"No admin endpoint {method} {path}")
