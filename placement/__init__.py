"""Placement: which offered machine a function may run on, and which one first.

Pure logic on plain data (standard library only, no I/O): the filter model compiled from a
function's placement options, matching an :class:`Offer`, ranking offers and explaining why
none matched. Providers (``placement.providers``) list their machines as :class:`Offer`.

Units follow the Vast.ai offer API: ``gpu_ram`` MB per GPU, ``cpu_ram`` MB, ``dph_total`` USD
per hour, ``total_flops`` TFLOPS, ``inet_*`` Mbit/s. Named options say their unit in their name
(``min_vram_gb`` is GB).
"""

from ._compile import compile_filters
from ._engine import PLACEMENT_OPTIONS, choose, placement_query, resource_constraints
from ._errors import FilterError, FilterProblem
from ._fields import OPERATORS
from ._match import NoMatchExplanation, Rejection, explain, matches
from ._offer import Offer
from ._query import Constraint, OfferQuery
from ._rank import rank, rank_key

__all__ = [
    "Constraint",
    "FilterError",
    "FilterProblem",
    "NoMatchExplanation",
    "OPERATORS",
    "Offer",
    "OfferQuery",
    "PLACEMENT_OPTIONS",
    "Rejection",
    "choose",
    "compile_filters",
    "explain",
    "matches",
    "placement_query",
    "rank",
    "rank_key",
    "resource_constraints",
]
