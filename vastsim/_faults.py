"""Fault injection: the failures of the real service that a client must survive.

:class:`FaultsMixin` holds the pending faults of a :class:`~._core.SimCore` and the methods that
arm them (also reachable as ``POST /_sim/faults`` with ``{"kind": <method name>, ...}``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._reply import Reply, error

if TYPE_CHECKING:
    import threading

    from ._catalogue import Ask, Machine
    from ._core import Instance


@dataclass
class _StatusRule:
    status: int
    remaining: int
    method: str | None
    path: re.Pattern[str] | None
    style: str


class FaultsMixin:
    """The fault-injection half of :class:`~._core.SimCore` (see there for the state it uses)."""

    _lock: threading.RLock
    asks: dict[int, Ask]
    machines: dict[int, Machine]
    instances: dict[int, Instance]

    def _schedule(self, delay: float, fn: Any, *args: Any) -> None:
        raise NotImplementedError

    def _kill_machine(self, machine_id: int) -> None:
        raise NotImplementedError

    def _clear_faults(self) -> None:
        self._rules: list[_StatusRule] = []
        self._stuck_offers: set[int] = set()
        self._stuck_next = 0
        self._lost_creates: list[tuple[str, float]] = []
        self._ignored_filters: set[str] = set()
        self._armed_deaths: dict[int, float] = {}
        self._pull_failures: list[_PullRule] = []

    def clear_faults(self) -> None:
        """Remove every pending fault. Offers already taken and hosts already dead stay so."""
        with self._lock:
            self._clear_faults()

    def rate_limit(self, count: int, *, method: str | None = None, path: str | None = None,
                   style: str = "detail") -> None:
        """Answer the next ``count`` API requests (matching ``method``/``path``) with HTTP 429.

        Args:
            count: how many requests.
            method: only requests with this method ("PUT"), any when None.
            path: only paths matching this regular expression (searched), any when None.
            style: the body: ``"detail"`` ``{"detail": "API requests too frequent endpoint
                threshold=4.5"}``, ``"error"`` ``{"success": false, "error":
                "rate_limit_exceeded", ...}`` or ``"text"`` (plain text). No Retry-After header.
        """
        self.fail_requests(count, 429, method=method, path=path, style=style)

    def fail_requests(self, count: int, status: int = 500, *, method: str | None = None,
                      path: str | None = None, style: str = "detail") -> None:
        """Answer the next ``count`` matching API requests with ``status`` before doing anything.

        A 502/503/504 answers an HTML gateway page, other statuses a JSON error. Rules queue:
        a request meets the first rule that matches it.
        """
        if count < 1 or not 400 <= status <= 599:
            raise ValueError("count must be >= 1 and status a 4xx or 5xx code")
        if style not in ("detail", "error", "text"):
            raise ValueError(f"style must be 'detail', 'error' or 'text', got {style!r}")
        with self._lock:
            self._rules.append(_StatusRule(int(status), int(count), method.upper() if method else None,
                                           re.compile(path) if path else None, style))

    def take_offer(self, offer_id: int, status: int = 404) -> None:
        """Let "another user" rent an offer: it leaves the search, and a create answers 404
        ``no_such_ask`` (or 410 with ``status=410``, Vast's answer when the instance cannot start).

        Raises:
            KeyError: unknown offer.
            ValueError: ``status`` is neither 404 nor 410.
        """
        if status not in (404, 410):
            raise ValueError("status must be 404 or 410")
        with self._lock:
            self.asks[int(offer_id)].gone_status = int(status)

    def stick_loading(self, offer_id: int | None = None, count: int = 1) -> None:
        """Make instances never leave ``loading``: every instance of ``offer_id``, or else the
        next ``count`` instances created."""
        with self._lock:
            if offer_id is not None:
                self._stuck_offers.add(int(offer_id))
            else:
                self._stuck_next += int(count)

    def host_dies(self, *, instance_id: int | None = None, machine_id: int | None = None,
                  offer_id: int | None = None, after_s: float = 0.0) -> None:
        """Kill a host: its instances' processes are killed and they show ``"offline"``; its
        offers leave the search.

        Args:
            instance_id: the host of this instance dies ``after_s`` seconds from now.
            machine_id: this machine dies ``after_s`` seconds from now.
            offer_id: armed: the machine of this offer dies ``after_s`` seconds after the next
                instance on this offer is created.
            after_s: delay in seconds.
        """
        with self._lock:
            if offer_id is not None:
                self._armed_deaths[int(offer_id)] = float(after_s)
                return
            if instance_id is not None:
                inst = self.instances.get(int(instance_id))
                if inst is None:
                    raise KeyError(f"no instance {instance_id}")
                machine_id = inst.machine.machine_id
            if machine_id is None or int(machine_id) not in self.machines:
                raise KeyError(f"no machine {machine_id}")
        self._schedule(float(after_s), self._kill_machine, int(machine_id))

    def lose_create_response(self, count: int = 1, mode: str = "drop", delay_s: float = 5.0) -> None:
        """The next ``count`` creates that succeed create their instance but the answer is lost.

        Args:
            mode: ``"drop"`` closes the connection without answering, ``"500"`` answers a 500
                error, ``"delay"`` answers only after ``delay_s`` seconds (a client timeout).
        """
        if mode not in ("drop", "500", "delay"):
            raise ValueError("mode must be 'drop', '500' or 'delay'")
        with self._lock:
            self._lost_creates.extend([(mode, float(delay_s))] * int(count))

    def fail_pull(self, image: str | None = None, count: int = 1, message: str | None = None) -> None:
        """Make the image of the next ``count`` created instances (whose image matches the
        regular expression ``image``, any when None) impossible to pull: after ``loading_s``
        the instance stays ``loading`` and its ``status_msg`` shows the Docker daemon's error,
        as a host whose registry has no such image does. ``count=0``: every matching create.

        Args:
            message: the ``status_msg``; by default ``Error response from daemon: manifest for
                <image> not found: manifest unknown: manifest unknown``.
        """
        if count < 0:
            raise ValueError("count must be >= 0 (0: every matching create)")
        with self._lock:
            self._pull_failures.append(_PullRule(re.compile(image) if image else None, int(count) or -1, message))

    def pull_error_for(self, image: str) -> str | None:
        """The pull error a new instance of ``image`` gets, if a ``fail_pull`` rule matches (and
        consume it)."""
        with self._lock:
            for rule in self._pull_failures:
                if rule.image is not None and not rule.image.search(image):
                    continue
                if rule.remaining > 0:
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._pull_failures.remove(rule)
                return rule.message or pull_error_text(image)
        return None

    def ignore_filter(self, field: str) -> None:
        """Make the search ignore every filter on ``field`` (as the name was sent, or the
        column it resolves to), so it returns offers that violate it."""
        with self._lock:
            self._ignored_filters.add(field)

    FAULTS = ("rate_limit", "fail_requests", "take_offer", "stick_loading", "host_dies",
              "lose_create_response", "ignore_filter", "fail_pull", "clear_faults")

    def check_rules(self, method: str, path: str) -> Reply | None:
        """The injected error for this request, if a rule matches (and consume it)."""
        with self._lock:
            for rule in self._rules:
                if rule.method and rule.method != method:
                    continue
                if rule.path and not rule.path.search(path):
                    continue
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._rules.remove(rule)
                return _injected(rule)
        return None


@dataclass
class _PullRule:
    image: re.Pattern[str] | None
    remaining: int  # -1: every matching create
    message: str | None


def pull_error_text(image: str) -> str:
    """What the Docker daemon says of an image its registry does not have."""
    return f"Error response from daemon: manifest for {image} not found: manifest unknown: manifest unknown"


def _injected(rule: _StatusRule) -> Reply:
    if rule.status == 429:
        if rule.style == "text":
            return Reply(429, "API requests too frequent", content_type="text/plain")
        if rule.style == "error":
            return error(429, "rate_limit_exceeded", "API requests too frequent endpoint threshold=3.0")
        return Reply(429, {"detail": "API requests too frequent endpoint threshold=4.5"})
    if rule.status in (502, 503, 504):
        return Reply(rule.status, f"<html><body><h1>{rule.status} Gateway error</h1></body></html>",
                     content_type="text/html")
    return error(rule.status, "server_error" if rule.status >= 500 else "injected", "Injected failure")
