"""`FilterError`: every problem found in a function's placement filters, raised once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FilterProblem:
    """One thing wrong with the placement filters.

    Attributes:
        loc: where it is, e.g. ``("offer_filters", "gpu_ram", "gte")`` or ``("min_vram_gb",)``.
        value: the offending value as given.
        allowed: the allowed range or values, as text.
        fix: a sentence telling the user what to write instead.
        message: what is wrong, in a short sentence.
    """

    loc: tuple[str, ...]
    value: Any = field(hash=False)  # may be a list or dict
    allowed: str
    fix: str
    message: str = ""

    def __str__(self) -> str:
        where = ".".join(self.loc)
        what = f" {self.message}" if self.message else ""
        return f"{where}:{what} Got {self.value!r}; allowed: {self.allowed}. Fix: {self.fix}"


class FilterError(ValueError):
    """The placement filters are invalid; ``problems`` lists every problem found.

    Raised by :func:`compile_filters` after checking everything, so one run reports all of
    them. ``str()`` gives one numbered line per problem.
    """

    def __init__(self, problems: Iterable[FilterProblem]) -> None:
        self.problems: tuple[FilterProblem, ...] = tuple(problems)
        super().__init__(self.problems)

    def __str__(self) -> str:
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in placement filters:"
        lines = [f"  {i}. {p}" for i, p in enumerate(self.problems, 1)]
        return "\n".join([head, *lines])
