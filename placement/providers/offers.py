"""What every enabled provider offers now, as one list for the placement engine.

``process`` and ``docker`` offer this host (at no cost); ``vast`` offers what the Vast.ai API
finds for the query. The control worker places containers with it, and ``apothic offers``
shows it.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

from .. import NoMatchExplanation, Offer, OfferQuery, explain
from .docker import DockerProvider
from .vast import VastClient


def this_host_offer(provider: str, *, disk_path: Path | str = "/") -> Offer:
    """This machine as an offer of ``provider``: its cores, RAM and free disk, at no cost."""
    ram_gb = 0.0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    ram_gb = int(line.split()[1]) * 1024 / 1e9
                    break
    except OSError:
        pass
    try:
        disk_gb = shutil.disk_usage(disk_path).free / 1e9
    except OSError:
        disk_gb = 0.0
    machine = os.uname().machine
    return Offer(
        provider=provider,
        offer_id=f"{provider}:{socket.gethostname()}",
        cpu_cores=float(os.cpu_count() or 1),
        cpu_ram_gb=round(ram_gb, 3),
        disk_space_gb=round(disk_gb, 3),
        dph_total=0.0,
        reliability=1.0,
        verification="verified",
        cpu_arch={"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine),
    )


async def gather_offers(
    providers: Sequence[str],
    query: OfferQuery,
    *,
    disk_path: Path | str = "/",
    docker: DockerProvider | None = None,
    vast_limit: int = 64,
) -> tuple[list[Offer], dict[str, str]]:
    """The offers of ``providers`` for ``query``, and why a provider gave none (it did not answer).

    The Vast search sends the query to the API (which filters on its side); the others list
    this host whatever the query. Nothing is filtered here: rank with
    :func:`apothic.placement.choose`.
    """
    offers: list[Offer] = []
    skipped: dict[str, str] = {}
    for name in providers:
        try:
            if name == "process":
                offers.append(this_host_offer("process", disk_path=disk_path))
            elif name == "docker":
                offers.extend(await (docker or DockerProvider()).list_offers())
            elif name == "vast":
                async with VastClient() as client:
                    offers.extend(await client.search(query, limit=vast_limit))
            else:
                skipped[name] = "unknown provider"
        except Exception as e:  # noqa: BLE001 - a provider that does not answer is skipped, and said
            skipped[name] = f"{type(e).__name__}: {e}"
    return offers, skipped


async def explain_no_match(providers: Sequence[str], query: OfferQuery, offers: list[Offer]) -> NoMatchExplanation:
    """Why no offer matched: counted over ``offers`` and, since the Vast API filters on its side
    (a search that matched nothing returns nothing to count), over a broad sample of Vast's."""
    sample = list(offers)
    if "vast" in providers:
        sample.extend((await gather_offers(["vast"], OfferQuery()))[0])
    return explain(query, sample)
