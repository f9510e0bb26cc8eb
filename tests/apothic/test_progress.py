"""The progress line: what a bar says (done, failed, rate, time left), how often it is
redrawn, how it leaves the terminal, and when it is drawn at all."""

from __future__ import annotations

import datetime
import io
import re
import sys

import pytest

from apothic import InvalidError, enable_output
from apothic._invoke._output import OUTPUT
from apothic._invoke._progress import PROGRESS, Renderer, _Guard, _NullBar, wanted

ERASE = "\r\x1b[K"


class Terminal(io.StringIO):
    """A stream that says it is a terminal (what the renderer checks), keeping what it got."""

    def __init__(self, encoding: str = "utf-8") -> None:
        super().__init__()
        self._encoding = encoding

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding

    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def renderer(
    width: int = 100, encoding: str = "utf-8", redirect: bool = False
) -> tuple[Renderer, Terminal, Clock]:
    term, clock = Terminal(encoding), Clock()
    return (
        Renderer(term, clock=clock, width=width, ticker=False, redirect=redirect),
        term,
        clock,
    )


def shown(term: Terminal) -> str:
    """What the last redraw put on the line."""
    text = term.getvalue()
    last = text.rsplit("\r", 1)[-1]
    return last.removesuffix("\x1b[K")


def screen(term: Terminal) -> list[str]:
    """The rows a terminal shows after this output (a row keeps what follows its last ``\r``)."""
    return [
        row.rsplit("\r", 1)[-1].replace("\x1b[K", "")
        for row in term.getvalue().split("\n")
    ]


def draws(term: Terminal) -> int:
    """Redraws so far (each starts with a carriage return and is not an erase)."""
    return term.getvalue().count("\r") - term.getvalue().count(ERASE)


def test_a_bar_shows_done_failed_rate_and_time_left() -> None:
    r, term, clock = renderer()
    bar = r.bar("square", 20)
    assert shown(term).startswith("square  ") and "0/20  0 failed  0:00" in shown(term)
    for i in range(8):
        clock.now += 0.5
        bar.advance(failed=1 if i in (2, 5) else 0)
    line = shown(term)
    # 8 done in 4 s: 2.0/s, 12 to go: 6 s.
    assert "8/20  2 failed  2.0/s  ETA 0:06" in line, line
    cells = line.count("█") + line.count("░")
    assert cells == 30 and line.count("█") == 12, line  # 8 of 20 of 30 cells


def test_the_rate_follows_the_last_seconds_not_the_whole_run() -> None:
    r, term, clock = renderer()
    bar = r.bar("slow start", 1000)
    clock.now += 60  # a cold start: a minute with nothing
    for _ in range(100):
        clock.now += 0.1
        bar.advance()
    # The first minute has left the 10 s window: 10/s, not 100 / 70 s.
    r.refresh(force=True)
    assert "100/1000  0 failed  10.0/s  ETA 1:30" in shown(term), shown(term)


def test_redraws_are_throttled_to_ten_a_second() -> None:
    r, term, clock = renderer()
    bar = r.bar("fast", 10_000)
    first = draws(term)
    for _ in range(1000):  # 1000 results within 0.5 s
        clock.now += 0.0005
        bar.advance()
    assert draws(term) - first <= 6, draws(term)
    assert draws(term) - first >= 4
    r.refresh(force=True)
    assert "1000/10000" in shown(term)


def test_an_unknown_total_shows_count_and_rate_without_eta_until_it_is_known() -> None:
    r, term, clock = renderer()
    bar = r.bar("gen", None)
    for _ in range(4):
        clock.now += 0.5
        bar.advance()
    line = shown(term)
    assert (
        line.startswith("gen  4 done  0 failed  2.0/s")
        and "ETA" not in line
        and "█" not in line
    ), line
    bar.set_total(10)
    clock.now += 0.5
    bar.advance()
    assert "5/10  0 failed" in shown(term) and "ETA" in shown(term), shown(term)


def test_a_finished_bar_leaves_its_summary_on_a_line_of_its_own() -> None:
    r, term, clock = renderer()
    with r.bar("square", 20) as bar:
        for i in range(20):
            clock.now += 0.25
            bar.advance(failed=1 if i < 3 else 0)
    text = term.getvalue()
    assert text.endswith("\n") and ERASE in text, repr(text)
    summary = text.rsplit(ERASE, 1)[-1]
    assert (
        summary.startswith("square  ")
        and "20/20  3 failed  4.0/s  in 0:05\n" in summary
    ), repr(summary)
    assert r.entries == [] and r.shown == ""


def test_an_error_or_interrupt_erases_the_bar() -> None:
    for error in (ValueError("boom"), KeyboardInterrupt()):
        r, term, clock = renderer()
        with pytest.raises(type(error)), r.bar("square", 20) as bar:
            clock.now += 1
            bar.advance()
            raise error
        assert term.getvalue().endswith(ERASE), repr(term.getvalue())
        assert "\n" not in term.getvalue() and r.entries == []


def test_lines_printed_while_a_bar_is_up_go_above_it() -> None:
    r, term, clock = renderer()
    bar = r.bar("square", 4)
    clock.now += 1
    bar.advance()
    with r.above():
        term.write("[square #0] hello\n")
    assert term.getvalue().endswith(
        f"{ERASE}[square #0] hello\n"
    )  # drawn 0 s ago: not yet again
    clock.now += 0.2
    r.refresh()  # what the ticker does
    text = term.getvalue()
    # erased, the line, the bar again: never a bar and a line on the same row
    assert re.search(
        r"\r\x1b\[K\[square #0\] hello\n\rsquare  █+░+  1/4  0 failed  0.8/s  ETA 0:04\x1b\[K$",
        text,
    ), text


def test_the_line_is_cut_to_the_terminal_width() -> None:
    r, term, clock = renderer(width=40)
    bar = r.bar("a_function_with_a_rather_long_name", 20)
    clock.now += 1
    bar.advance(failed=1)
    for chunk in term.getvalue().split("\r")[1:]:
        assert len(chunk.removesuffix("\x1b[K")) <= 39, chunk
    assert "█" not in shown(term)  # no room for a graphic: the counts stay


def test_an_ascii_terminal_gets_an_ascii_bar_and_spinner() -> None:
    r, term, clock = renderer(encoding="ascii")
    bar = r.bar("square", 10)
    clock.now += 1
    bar.advance(5)
    assert "[" + "#" * 15 + "-" * 15 + "]" in shown(term), shown(term)
    bar.close()
    spinner = r.spinner("building image x")
    spinner.set_step("pip_install('numpy')")
    clock.now += 12.3
    r.refresh()
    assert shown(term) in {
        f"{c} building image x: pip_install('numpy')  0:12" for c in "|/-\\"
    }, shown(term)
    spinner.close()
    assert term.getvalue().endswith(ERASE)


def test_several_bars_share_one_line() -> None:
    r, term, clock = renderer(width=200)
    one, two = r.bar("one", 2), r.bar("two", None, " submitted")
    clock.now += 1
    one.advance()
    two.advance()
    r.refresh(force=True)
    line = shown(term)
    assert (
        line.startswith("one  ") and " | two  1 submitted  0 failed  1.0/s" in line
    ), line
    one.close()
    assert shown(term).startswith("two  1 submitted"), shown(term)


def test_prints_of_the_caller_erase_the_bar_and_it_comes_back_on_a_new_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_out = Terminal()
    monkeypatch.setattr(sys, "stdout", user_out)
    r, term, clock = renderer(redirect=True)
    bar = r.bar("square", 4)
    assert isinstance(sys.stdout, _Guard)
    clock.now += 1
    print("result 0", end="")  # a line in progress: the bar stays off until it ends
    clock.now += 1
    bar.advance()
    assert term.getvalue().endswith(ERASE)
    print()
    assert user_out.getvalue() == "result 0\n"
    assert shown(term).startswith("square") and "1/4" in shown(term)
    bar.close()
    assert sys.stdout is user_out  # put back when the last bar is gone


def test_a_null_bar_where_no_progress_is_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    with PROGRESS.bar("square", 3) as bar:
        assert isinstance(bar, _NullBar)
        bar.advance(failed=1)
    assert pipe.getvalue() == ""


def test_when_a_bar_is_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    term = Terminal()
    monkeypatch.delenv("APOTHIC_PROGRESS", raising=False)
    monkeypatch.delenv("APOTHIC_CONTAINER_ID", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert wanted(term) and not wanted(io.StringIO())
    for value in ("0", "false", "OFF", "no"):
        monkeypatch.setenv("APOTHIC_PROGRESS", value)
        assert not wanted(term)
    for value in ("1", "on", "auto", ""):
        monkeypatch.setenv("APOTHIC_PROGRESS", value)
        assert wanted(term)
    monkeypatch.setenv("APOTHIC_PROGRESS", "sometimes")
    with pytest.raises(
        InvalidError, match=r"APOTHIC_PROGRESS='sometimes': allowed: 0/false/off .* Fix"
    ):
        wanted(term)
    assert not wanted(term, strict=False)  # an image spinner does not break on it
    monkeypatch.delenv("APOTHIC_PROGRESS")
    monkeypatch.setenv("TERM", "dumb")
    assert not wanted(term)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv(
        "APOTHIC_CONTAINER_ID", "c-1"
    )  # inside a function container: never
    assert not wanted(term)
    monkeypatch.delenv("APOTHIC_CONTAINER_ID")
    with enable_output(False):  # a quiet block is quiet
        assert not wanted(term)
    assert wanted(term)


def test_an_image_build_spins_with_its_step_and_says_how_long_it_took(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.delenv("APOTHIC_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    clock = Clock()
    monkeypatch.setattr(
        PROGRESS, "renderer", Renderer(term, clock=clock, ticker=False, redirect=False)
    )
    began = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=65)
    try:
        OUTPUT.event(
            "f", "job-1", "image", {"status": "building", "image": "img-abc"}, began
        )
        clock.now += 0.2
        PROGRESS.renderer.refresh()  # what the ticker does
        line = shown(term)
        assert line.split(" ", 1)[1].startswith("building image img-abc  1:05"), line
        OUTPUT.event(
            "f",
            "job-1",
            "image",
            {
                "status": "output",
                "image": "img-abc",
                "lines": ["==> pip_install('six')", "Collecting six"],
            },
            began + datetime.timedelta(seconds=1),
        )
        clock.now += 0.2
        PROGRESS.renderer.refresh()
        assert "building image img-abc: pip_install('six')" in shown(term), shown(term)
        OUTPUT.event(
            "f",
            "job-1",
            "image",
            {"status": "built", "image": "img-abc"},
            began + datetime.timedelta(seconds=42.25),
        )
    finally:
        PROGRESS.stop()
    assert screen(term) == [
        "building image img-abc",
        "  ==> pip_install('six')",
        "  Collecting six",
        "built image img-abc in 42.2 s",
        "",
    ], repr(term.getvalue())
    assert PROGRESS.spinners == {}
    assert PROGRESS.renderer.entries == []
