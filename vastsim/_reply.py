"""`Reply`: one answer of the simulated API, and Vast's error shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    """One answer of the API.

    Attributes:
        status: HTTP status.
        body: JSON-able body, or text when ``content_type`` is not JSON.
        content_type: the Content-Type header.
        action: ``None``, ``"drop"`` (close the connection without answering) or
            ``"delay"`` (answer after ``delay_s``), for the lost-response fault.
        delay_s: seconds to wait before answering when ``action == "delay"``.
    """

    status: int
    body: Any
    content_type: str = "application/json"
    action: str | None = None
    delay_s: float = 0.0


def error(status: int, code: str, msg: str, **extra: Any) -> Reply:
    """Vast's error shape: ``{"success": false, "error": code, "msg": msg, ...}``."""
    return Reply(status, {"success": False, "error": code, "msg": msg, **extra})
