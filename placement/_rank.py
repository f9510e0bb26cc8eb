"""Ranking the offers that match a query, best first."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._match import matches
from ._offer import Offer
from ._query import OfferQuery


def rank_key(offer: Offer) -> tuple[Any, ...]:
    """Sort key of an offer; smaller is better.

    Cheapest ``dph_total`` first, then higher ``reliability``, then higher ``total_flops``,
    then ``offer_id``, ``provider`` and finally the offer's ``repr`` so that the order never
    depends on the input order. Local offers (``process``/``docker``) are not special: they
    compete at their own ``dph_total``, normally 0.
    """
    return (offer.dph_total, -offer.reliability, -offer.total_flops, offer.offer_id, offer.provider,
            repr(offer))


def rank(query: OfferQuery, offers: Iterable[Offer]) -> list[Offer]:
    """Return the offers that match ``query``, best first (see :func:`rank_key`).

    Offers that do not match are dropped; use :func:`explain` to say why.
    """
    return sorted((o for o in offers if matches(query, o)), key=rank_key)
