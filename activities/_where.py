"""Where a container was placed: one ``Placement`` from the host's facts, told to its workflow.

``run_container`` builds it once the container has started (the provider, the offer it chose,
the instance, machine, image and price) and signals it to the container's ContainerWorkflow,
which keeps it in its memo (``apothic.placement``) and returns it with its result. The
container's runtime reads that memo and names the placement in each input's started event, so
a job learns where each attempt ran without a request of its own.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

from apothic.placement import Offer
from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError

from apothic._contracts import CONTAINER_PLACED_SIGNAL, FunctionSpec, Placement


def placement_of(
    container_id: str, provider: str, spec: FunctionSpec, offer: Offer | None, where: dict[str, Any],
    candidates: list[Offer] | None = None,
) -> Placement:
    """The placement of a container just started on ``provider`` (``where``: the host's facts)."""
    chosen = offer
    offer_id = str(where.get("offer_id") or (offer.offer_id if offer else ""))
    for o in candidates or ():  # a rented machine may be a later offer than the best one
        if o.offer_id == offer_id:
            chosen = o
    if provider == "vast":
        instance = str(where.get("instance_id", ""))
        extra = chosen.extra if chosen is not None else {}
        machine = extra.get("machine_id")
        address = extra.get("public_ipaddr")
        host = " ".join(p for p in (f"machine {machine}" if machine else "", f"({address})" if address else "") if p)
    else:
        instance = str(where.get("docker_id") or where.get("pid") or "")
        host = socket.gethostname()
    image = str(where.get("image") or "")
    if not image and spec.image:  # a process in the image's virtual environment
        from apothic._image import Image

        image = Image.from_dict(spec.image).tag
    return Placement(
        container_id=container_id,
        provider=provider,
        offer_id=offer_id,
        instance=instance,
        host=host,
        image=image,
        dph=float(where.get("dph_total", chosen.dph_total if chosen is not None else 0.0) or 0.0),
        gpu_name=str(where.get("gpu_name", chosen.gpu_name if chosen is not None else "") or ""),
        num_gpus=int(where.get("num_gpus", chosen.num_gpus if chosen is not None else 0) or 0),
        geolocation=str(where.get("geolocation", chosen.geolocation if chosen is not None else "") or ""),
        started_at=datetime.now(UTC).isoformat(),
    )


async def tell_placed(client: Client, container_workflow_id: str, placement: Placement) -> None:
    """Signal the placement to the container's workflow (a failure is logged: the container
    runs anyway, its jobs then do not learn where)."""
    try:
        await client.get_workflow_handle(container_workflow_id).signal(CONTAINER_PLACED_SIGNAL, placement)
    except RPCError as e:
        activity.logger.warning("could not tell %s where it runs: %s", container_workflow_id, e.message)
