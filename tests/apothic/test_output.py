"""Live output's own text: what a retry line says."""

from __future__ import annotations

import pytest

from apothic._invoke._output import _Output


def test_live_output_prints_a_retry_with_its_kind_and_reason(capsys: pytest.CaptureFixture[str]) -> None:
    out = _Output()
    out.enabled = True
    out.event("square", "job-0123456789", "retry",
              {"attempt": 1, "kind": "user", "reason": "RuntimeError: boom", "retry_in_s": 0.5})
    out.event("square", "job-0123456789", "retry",
              {"attempt": 2, "kind": "infra", "reason": "the function's container exited", "retry_in_s": 1})
    assert capsys.readouterr().err.splitlines() == [
        "square: attempt 1 failed (RuntimeError: boom); retrying in 0.5 s",
        "square: attempt 2 failed (infra: the function's container exited); retrying in 1 s",
    ]
