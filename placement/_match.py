"""Matching offers against a query, and explaining why none (or few) matched."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ._offer import Offer
from ._query import Constraint, OfferQuery

_VERB = {"gte": "below", "gt": "below", "lte": "over", "lt": "over", "eq": "not matching",
         "in": "not matching", "neq": "excluded by", "notin": "excluded by"}


def matches(query: OfferQuery, offer: Offer) -> bool:
    """Whether ``offer`` satisfies every constraint of ``query``.

    An offer lacking a constrained field (``None``) fails that constraint, whatever the
    operator.
    """
    return all(c.accepts(offer) for c in query.constraints)


@dataclass(frozen=True)
class Rejection:
    """How many offers one constraint turned away.

    Attributes:
        constraint: the constraint.
        count: offers it rejected (an offer rejected by several constraints counts for each).
        only: offers it alone rejected: relaxing just this constraint would admit them.
    """

    constraint: Constraint
    count: int
    only: int

    def __str__(self) -> str:
        c = self.constraint
        return f"{self.count} {_VERB.get(c.op, 'rejected by')} {c.source} ({c})"


@dataclass(frozen=True)
class NoMatchExplanation:
    """Why the offers listed did (not) match a query.

    ``str()`` reads like ``"12 offers, none matched: 7 over max_cost_per_hour_usd
    (dph_total <= 1.5 $/h), 5 below min_vram_gb (gpu_ram >= 9523 MB)"`` followed, when some
    offers failed a single constraint, by how many each constraint alone kept out.

    Attributes:
        total: offers examined.
        matched: offers that satisfied every constraint.
        rejections: one entry per constraint of the query, in query order (counts may be 0).
    """

    total: int
    matched: int
    rejections: tuple[Rejection, ...]

    def __str__(self) -> str:
        if self.total == 0:
            return "0 offers: no provider listed any offer to match against."
        noun = "offer" if self.total == 1 else "offers"
        head = f"{self.total} {noun}, " + ("none matched" if self.matched == 0 else f"{self.matched} matched")
        active = sorted((r for r in self.rejections if r.count), key=lambda r: -r.count)
        if not active:
            return head + "."
        text = f"{head}: " + ", ".join(str(r) for r in active)
        alone = sorted((r for r in self.rejections if r.only), key=lambda r: -r.only)
        if alone:
            text += ". Relaxing one filter alone would admit: " + ", ".join(
                f"{r.constraint.source} {r.only}" for r in alone)
        return text + "."


def explain(query: OfferQuery, offers: Iterable[Offer]) -> NoMatchExplanation:
    """Count, for each constraint, how many of ``offers`` it rejects.

    An offer matches exactly when no constraint rejects it, so ``matched`` equals the number
    of offers for which :func:`matches` is true.
    """
    constraints = query.constraints
    counts = [0] * len(constraints)
    only = [0] * len(constraints)
    total = matched = 0
    for offer in offers:
        total += 1
        failed = [i for i, c in enumerate(constraints) if not c.accepts(offer)]
        if not failed:
            matched += 1
        for i in failed:
            counts[i] += 1
        if len(failed) == 1:
            only[failed[0]] += 1
    rejections = tuple(Rejection(c, counts[i], only[i]) for i, c in enumerate(constraints))
    return NoMatchExplanation(total=total, matched=matched, rejections=rejections)
