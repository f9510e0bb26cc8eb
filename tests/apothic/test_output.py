"""Live output's own text: what a retry line says."""

from __future__ import annotations

import pytest

from apothic._invoke._output import _Output, retry_reason


def test_a_retry_reason_drops_the_qualified_name_before_the_exceptions_own_text() -> None:
    assert retry_reason("builtins.RuntimeError: RuntimeError: boom\nmore") == "RuntimeError: boom\nmore"
    assert retry_reason("mypkg.errors.OddError: OddError: odd") == "OddError: odd"
    assert retry_reason("the function's container exited (attempt 2)") == "the function's container exited (attempt 2)"
    assert retry_reason("x.ValueError: KeyError: not the same type") == "x.ValueError: KeyError: not the same type"


def test_live_output_prints_a_users_retry_once_by_its_type(capsys: pytest.CaptureFixture[str]) -> None:
    out = _Output()
    out.enabled = True
    out.event("square", "job-0123456789", "retry",
              {"attempt": 1, "kind": "user", "reason": "builtins.RuntimeError: RuntimeError: boom", "retry_in_s": 0.5})
    out.event("square", "job-0123456789", "retry",
              {"attempt": 2, "kind": "infra", "reason": "the function's container exited", "retry_in_s": 1})
    assert capsys.readouterr().err.splitlines() == [
        "square: attempt 1 failed (RuntimeError: boom); retrying in 0.5 s",
        "square: attempt 2 failed (infra: the function's container exited); retrying in 1 s",
    ]
