"""A local OpenAI-compatible chat-completions server with scripted answers, for the liv tests.

A real HTTP server (``http.server``, on a free loopback port, in a thread of the test process):
``POST /v1/chat/completions`` answers with the next scripted reply of the requested model, so
each test scripts its own model name and tests do not see each other's. A reply is a chat
completion (``Reply.code(...)``, ``Reply.text(...)``), an HTTP error with a body and headers
(``Reply.error(429, ...)``), a body that is not a completion (``Reply.raw(...)``), and may be
held until an event is set (``hold=``). Every request is recorded (headers and JSON body).
When a model's script is used up the server answers 400, which fails the generation clearly.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclasses.dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    hold: threading.Event | None = None

    @classmethod
    def text(cls, content: str, model: str = "", **kw: Any) -> Reply:
        body = {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        return cls(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, **kw)

    @classmethod
    def code(cls, source: str, **kw: Any) -> Reply:
        """An answer as models write them: a sentence, then the code in a fenced block."""
        return cls.text(f"Here is the implementation.\n\n```python\n{source.strip()}\n```\n", **kw)

    @classmethod
    def error(cls, status: int, message: str, headers: dict[str, str] | None = None, **kw: Any) -> Reply:
        body = json.dumps({"error": {"message": message, "type": "test_error"}}).encode()
        return cls(status, body, {"Content-Type": "application/json", **(headers or {})}, **kw)

    @classmethod
    def raw(cls, body: bytes, **kw: Any) -> Reply:
        return cls(200, body, {"Content-Type": "application/json"}, **kw)


@dataclasses.dataclass
class Request:
    model: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, str]]:
        return list(self.body.get("messages") or [])

    @property
    def last_user(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m.get("role") == "user"), "")


class ModelServer:
    """The scripted server (see the module's notes)."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        self.requests: list[Request] = []
        self.lock = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                model = str(body.get("model", ""))
                with server.lock:
                    server.requests.append(Request(model, dict(self.headers.items()), body))
                    server.lock.notify_all()
                    script = server.scripts.get(model, [])
                    reply = script.pop(0) if script and self.path.rstrip("/").endswith("/chat/completions") else None
                if reply is None:
                    reply = Reply.error(400, f"no scripted answer left for model {model!r} at {self.path}")
                if reply.hold is not None:
                    reply.hold.wait(120)
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:  # the caller went away (its worker was killed)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> ModelServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def script(self, model: str, *replies: Reply) -> None:
        with self.lock:
            self.scripts.setdefault(model, []).extend(replies)

    def left(self, model: str) -> int:
        with self.lock:
            return len(self.scripts.get(model, []))

    def requests_for(self, model: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.model == model]

    def wait_for_requests(self, model: str, count: int, timeout: float = 120) -> list[Request]:
        """Block until ``count`` requests for ``model`` arrived (an event, not a poll)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while len([r for r in self.requests if r.model == model]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the model server got fewer than {count} requests for {model!r}")
                self.lock.wait(left)
            return [r for r in self.requests if r.model == model]


def serving() -> Iterator[ModelServer]:
    server = ModelServer().start()
    try:
        yield server
    finally:
        server.stop()
