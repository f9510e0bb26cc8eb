"""The errors of image building, shared by the docker and the process (venv) builders."""

from __future__ import annotations

from typing import Any

from apothic.exceptions import ApothicError

__all__ = ["ImageBuildFailed", "ImageNotSupported"]


class ImageBuildFailed(ApothicError):
    """An image could not be built, resolved or pushed.

    Attributes:
        step: the failing step as written in the spec, e.g. ``"pip_install('torch')"``, or the
            phase (``"apothic runtime"``, ``"push"``, ``"Image.from_registry('x')"``).
        output_tail: the last lines that step printed.
        reason: one line saying what went wrong and, where known, the fix.
    """

    _what = "image build failed at"

    def __init__(self, step: str, output_tail: str = "", reason: str = "") -> None:
        self.step = step
        self.output_tail = output_tail
        self.reason = reason or "the step failed"
        message = f"{self._what} {step}: {self.reason}"
        if output_tail.strip():
            message += f"\n--- last output of {step} ---\n{output_tail.rstrip()}"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.step, self.output_tail, self.reason))


class ImageNotSupported(ImageBuildFailed):
    """This builder cannot honour a step or base of the spec (nothing was built)."""

    _what = "image not supported here:"
