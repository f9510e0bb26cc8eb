"""The ``vast`` provider: rent, watch and release Vast.ai machines over its REST API.

:class:`VastClient` is a thin async client of the API described in the project's
``vast-api.md`` (search offers, create, read, list and destroy instances, volumes, logs);
:func:`provision` rents the first offer of a ranked list that reaches ``running``.
No Temporal here: an activity calls these and heartbeats through ``on_event``.

Errors::

    VastError                 any failure of the API; .status, .code, .body when known
     ├── VastAuthError        no API key, or the key was refused (401/403)
     ├── VastRateLimited      still 429 after every retry
     ├── OfferGone            create answered 404/410 no_such_ask: rented by someone else
     ├── InstanceNotFound     the instance does not exist (any more)
     ├── CreateOutcomeUnknown the create's answer was lost and no instance with its label showed up
     └── ProvisionFailed      provision() ran out of offers; .attempts says why each failed, and
                              .permanent is True when no other offer could do better (the
                              image cannot be pulled: every host would fail the same way)

Retries: 429 is retried for every call (Vast refused it, so nothing happened) with
exponential backoff and jitter, a bounded number of times. Reads, searches and destroys are
also retried on 5xx and connection errors. A create is never re-sent when its outcome is
unknown (timeout, dropped connection, 5xx): the client lists instances and looks for the
create's unique ``label`` instead, so that a retry never rents a second, paid machine.

Permanent and transient start failures: :func:`provision` moves to the next offer when one
fails for a reason of that offer (taken by someone else, its host went offline, it stayed
loading past the ready timeout), and stops at once, destroying what it created, when the
instance's ``status_msg`` shows that its image cannot be pulled (``manifest unknown``,
``pull access denied``, ...): renting another machine for the same image would fail the
same way and cost money again.

Limits: a client must be used from one event loop (``httpx.AsyncClient``); interruptible (bid)
rentals, templates and SSH keys are not supported; ``search`` needs an
:class:`~apothic.placement.OfferQuery` (the server does not always honour filters, so each
offer it returns is checked again locally and dropped when it does not match).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import random
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from .. import Offer, OfferQuery, matches

__all__ = [
    "CreateOutcomeUnknown", "InstanceNotFound", "OfferGone", "ProvisionAttempt", "ProvisionFailed",
    "RetryPolicy", "VastAuthError", "VastClient", "VastError", "VastRateLimited", "provision", "rented_cost",
]

DEFAULT_URL = "https://console.vast.ai"
FAILED_STATUSES = frozenset({"exited", "offline", "unknown", "stopped", "frozen"})
"""``actual_status`` values after which an instance will not reach ``running`` by itself."""
PULL_ERROR = re.compile(
    r"manifest unknown|manifest for \S+ not found|pull access denied|repository does not exist|no such image"
    r"|(?:error|failed to) pull|unauthorized|denied: ",
    re.IGNORECASE,
)
"""A ``status_msg`` saying the instance's image cannot be pulled (Vast shows the Docker daemon's
error while the instance is ``loading`` or ``created``): no host will do better."""

_log = logging.getLogger(__name__)
_VERSIONED = re.compile(r"^/api/v\d+/")
_BOOL_DEFAULTS = ("external", "rentable", "rented")


class VastError(Exception):
    """A Vast API call failed.

    Attributes:
        status: the HTTP status, or None when no answer came.
        code: Vast's ``error`` field (``"no_such_ask"``, ``"invalid_args"``, ...) when given.
        body: the decoded answer (dict or text) when there was one.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.body = body


class VastAuthError(VastError):
    """No API key was given, or Vast refused it (401/403). Retrying does not help."""


class VastRateLimited(VastError):
    """Vast still answered 429 after every retry. Retry later."""


class OfferGone(VastError):
    """The offer cannot be rented any more (404/410 ``no_such_ask``): try another offer."""


class InstanceNotFound(VastError):
    """The instance does not exist, or no longer does."""


class CreateOutcomeUnknown(VastError):
    """A create's answer was lost and no instance with its label appeared when listed.

    The instance may still appear later; :func:`provision` sweeps its label to catch it.

    Attributes:
        label: the label the create used.
    """

    def __init__(self, message: str, *, label: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.label = label


@dataclass(frozen=True)
class ProvisionAttempt:
    """One offer :func:`provision` tried.

    Attributes:
        offer: the offer.
        reason: why it did not give a running instance, in a short sentence.
        instance_id: the instance created (and destroyed again), if one was.
    """

    offer: Offer
    reason: str
    instance_id: int | None = None

    def __str__(self) -> str:
        o = self.offer
        what = f"offer {o.offer_id} ({o.num_gpus}x {o.gpu_name or 'no GPU'}, ${o.dph_total:.3f}/h)"
        made = f", instance {self.instance_id} destroyed" if self.instance_id is not None else ""
        return f"{what}: {self.reason}{made}"


class ProvisionFailed(VastError):
    """No offer of the list gave a running instance.

    Attributes:
        attempts: one entry per offer tried, in order, with the reason it failed.
    """

    def __init__(self, attempts: Sequence[ProvisionAttempt], message: str | None = None, *,
                 permanent: bool = False) -> None:
        self.attempts = tuple(attempts)
        self.permanent = permanent
        if message is None:
            n = len(self.attempts)
            message = (f"no Vast offer could be provisioned ({n} tried)" + (": " if n else "") +
                       "; ".join(str(a) for a in self.attempts))
        super().__init__(message)


def rented_cost(seconds: float, dph: float) -> dict[str, float]:
    """``rented_s`` and ``cost_usd`` (price per hour x time) of an instance rented ``seconds``."""
    seconds = max(0.0, seconds)
    return {"rented_s": round(seconds, 3), "cost_usd": round(seconds * dph / 3600.0, 6)}


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry: ``attempts`` tries in all, the n-th retry waiting
    between half and all of ``min(max_s, base_s * 2**n)`` seconds (random)."""

    attempts: int = 5
    base_s: float = 0.5
    max_s: float = 20.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
        cap = min(self.max_s, self.base_s * 2 ** retry)
        return cap / 2 + random.uniform(0, cap / 2)


class VastClient:
    """An async client of the Vast.ai REST API.

    Args:
        api_key: the API key; ``VAST_API_KEY`` when None.
        base_url: the server; ``VAST_URL`` when None, else ``https://console.vast.ai``. Paths
            that do not start with ``/api/vN/`` get ``/api/v0`` in front, as the official
            client does.
        timeout_s: timeout of one request, in seconds.
        create_timeout_s: timeout of a create, in seconds.
        retry: the retry policy (429 on every call; 5xx and connection errors on reads and
            destroys).
        reconcile_checks: how many times to list instances for a create whose answer was lost.
        reconcile_interval_s: seconds between those checks.

    Raises:
        VastAuthError: no API key was given and ``VAST_API_KEY`` is empty.

    Use it from one event loop; close it with :meth:`aclose` or ``async with``.
    """

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *, timeout_s: float = 30.0,
                 create_timeout_s: float = 60.0, retry: RetryPolicy = RetryPolicy(),
                 reconcile_checks: int = 3, reconcile_interval_s: float = 1.0) -> None:
        key = api_key or os.environ.get("VAST_API_KEY")
        if not key:
            raise VastAuthError("No Vast API key: pass api_key=... or set VAST_API_KEY.")
        self.base_url = (base_url or os.environ.get("VAST_URL") or DEFAULT_URL).rstrip("/")
        self.retry = retry
        self.create_timeout_s = create_timeout_s
        self.reconcile_checks = max(1, reconcile_checks)
        self.reconcile_interval_s = reconcile_interval_s
        self.dropped: list[tuple[str, str]] = []
        """(offer id, reason) of the offers the last :meth:`search` dropped."""
        self._http = httpx.AsyncClient(
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json",
                     "User-Agent": "apothic-vast"},
        )

    def __repr__(self) -> str:
        return f"VastClient(base_url={self.base_url!r})"

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> VastClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def url(self, path: str) -> str:
        """The full URL of an API path (``/bundles/`` -> ``{base}/api/v0/bundles/``)."""
        if not _VERSIONED.match(path):
            path = "/api/v0" + path
        return self.base_url + path

    # ------------------------------------------------------------------ transport

    async def _request(self, method: str, path: str, *, idempotent: bool, params: Mapping[str, Any] | None = None,
                       body: Any = None, timeout: float | None = None) -> httpx.Response:
        """Send with retries. Transport errors propagate (as httpx errors) only when not
        ``idempotent``; otherwise they become :class:`VastError` after the last attempt."""
        url = self.url(path)
        kwargs: dict[str, Any] = {"params": params}
        if body is not None:
            kwargs["json"] = body
        if timeout is not None:
            kwargs["timeout"] = timeout
        attempt = 0
        while True:
            last = attempt + 1 >= self.retry.attempts
            try:
                response = await self._http.request(method, url, **kwargs)
            except httpx.TransportError as e:
                if not idempotent:
                    raise
                if last:
                    raise VastError(f"{method} {path}: no answer after {attempt + 1} attempts: "
                                    f"{type(e).__name__}: {e}") from e
                _log.info("vast %s %s: %s; retrying", method, path, type(e).__name__)
            else:
                status = response.status_code
                if status == 429:
                    if last:
                        raise VastRateLimited(f"{method} {path}: rate limited (429) after {attempt + 1} attempts",
                                              status=429, body=_body(response))
                    _log.info("vast %s %s: 429; retrying", method, path)
                elif status >= 500 and idempotent and not last:
                    _log.info("vast %s %s: HTTP %d; retrying", method, path, status)
                else:
                    return response
            await asyncio.sleep(self.retry.delay(attempt))
            attempt += 1

    @staticmethod
    def _fail(response: httpx.Response, what: str) -> VastError:
        body = _body(response)
        code = body.get("error") if isinstance(body, dict) else None
        msg = (body.get("msg") or body.get("detail") or "") if isinstance(body, dict) else str(body)[:300]
        status = response.status_code
        cls = VastAuthError if status in (401, 403) else VastRateLimited if status == 429 else VastError
        return cls(f"{what}: HTTP {status}" + (f" {code}" if code else "") + (f": {msg}" if msg else ""),
                   status=status, code=code, body=body)

    async def _json(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        response = await self._request(method, path, idempotent=True, **kwargs)
        if response.status_code >= 400:
            raise self._fail(response, what)
        body = _body(response)
        if not isinstance(body, dict):
            raise VastError(f"{what}: the answer is not a JSON object: {str(body)[:200]!r}",
                            status=response.status_code, body=body)
        return body

    # ------------------------------------------------------------------ offers

    async def search(self, query: OfferQuery, *, limit: int | None = None,
                     disk_gb: float | None = None) -> list[Offer]:
        """Search offers matching ``query`` (``POST /api/v0/bundles/``), cheapest first.

        Every offer returned is checked again locally with :func:`~apothic.placement.matches`
        (and against the availability defaults and disk size sent), and dropped when it fails;
        :attr:`dropped` lists those with the reason. Malformed offers are dropped too.

        Args:
            query: the compiled placement filters.
            limit: the most offers to ask for (the server caps it; 64 has been observed).
            disk_gb: the disk the instance will get: prices (``dph_total``) then include its
                storage, and offers with less free disk are left out. Vast prices 8 GB (its
                documented default) when None.
        """
        body = query.to_vast_body(limit=limit)
        if disk_gb is not None:
            body["allocated_storage"] = float(disk_gb)
        data = await self._json("POST", "/bundles/", "search offers", body=body)
        rows = data.get("offers")
        if not isinstance(rows, list):
            raise VastError("search offers: the answer has no 'offers' list", body=data)
        offers, dropped = [], []
        for row in rows:
            try:
                offer = Offer.from_vast(row)
            except (ValueError, TypeError, AttributeError) as e:
                dropped.append((str(row.get("id") if isinstance(row, dict) else row), f"malformed: {e}"))
                continue
            reason = _default_violated(body, row) or (None if matches(query, offer) else
                                                      "does not satisfy the filters")
            if reason:
                dropped.append((offer.offer_id, reason))
                continue
            offers.append(offer)
        for offer_id, reason in dropped:
            _log.warning("vast search: offer %s dropped: %s", offer_id, reason)
        self.dropped = dropped
        return offers

    # ------------------------------------------------------------------ instances

    async def create(self, offer_id: int | str, *, image: str, env: Mapping[str, str], onstart: str,
                     disk_gb: float, label: str, runtype: str = "args",
                     volume: Mapping[str, Any] | None = None) -> int:
        """Rent an offer (``PUT /api/v0/asks/{offer_id}/``); returns the new instance id.

        With ``runtype="args"`` (the default) ``onstart`` is the container's main process:
        the body is ``{"runtype": "args", "onstart": "/bin/sh", "args": ["-c", onstart]}``
        (the image needs ``/bin/sh``), and the instance becomes ``exited`` when it ends.
        Other runtypes (``"ssh"``, ``"jupyter"``) keep the image's service running and run
        ``onstart`` beside it.

        Args:
            offer_id: the offer (ask) id.
            image: the image to run.
            env: environment variables; keys like ``"-p 8000:8000"`` (value ``"1"``) open ports.
                Vast shows them in the instance record (``extra_env``).
            onstart: a shell script (at most 4,096 characters).
            disk_gb: disk in GB (Vast's minimum is 8).
            label: a label unique to this create: how a create whose answer was lost is found.
            runtype: ``"args"``, ``"ssh"`` or ``"jupyter"`` (and Vast's other spellings).
            volume: Vast's ``volume_info`` to create or attach a volume on the same machine.

        Raises:
            OfferGone: 404/410 ``no_such_ask``.
            CreateOutcomeUnknown: the answer was lost and no instance with ``label`` was found.
            VastError: any other refusal (400 ``invalid_args``, ...).
        """
        if not label:
            raise ValueError("create() needs a unique label: it is how a lost create is found again")
        body: dict[str, Any] = {"client_id": "me", "image": image, "env": {str(k): str(v) for k, v in env.items()},
                                "disk": float(disk_gb), "label": label}
        if runtype == "args":
            body.update(runtype="args", onstart="/bin/sh", args=["-c", onstart])
        else:
            body.update(runtype=runtype, onstart=onstart)
        if volume is not None:
            body["volume_info"] = dict(volume)
        path = f"/asks/{int(offer_id)}/"
        try:
            response = await self._request("PUT", path, idempotent=False, body=body,
                                           timeout=self.create_timeout_s)
        except httpx.TransportError as e:
            return await self._reconcile(label, f"{type(e).__name__}: {e}")
        status, answer = response.status_code, _body(response)
        if status >= 500:
            return await self._reconcile(label, f"HTTP {status}")
        if status in (404, 410):
            err = self._fail(response, f"create on offer {offer_id}")
            raise OfferGone(str(err), status=status, code=err.code, body=answer)
        if status == 200 and isinstance(answer, dict) and answer.get("success") and answer.get("new_contract"):
            return int(answer["new_contract"])
        if status == 200 and not isinstance(answer, dict):
            return await self._reconcile(label, "unreadable answer")
        stray = answer.get("new_contract") if isinstance(answer, dict) else None
        if stray:
            # e.g. a bid below market: Vast made a stopped instance and still says no.
            await self.destroy(int(stray))
        raise self._fail(response, f"create on offer {offer_id}")

    async def _reconcile(self, label: str, why: str) -> int:
        _log.warning("vast create %r: outcome unknown (%s); looking for it by label", label, why)
        for check in range(self.reconcile_checks):
            try:
                found = await self.list_instances(label=label)
            except VastError as e:
                _log.info("vast create %r: listing failed: %s", label, e)
                found = []
            if found:
                return max(int(i["id"]) for i in found)
            if check + 1 < self.reconcile_checks:
                await asyncio.sleep(self.reconcile_interval_s)
        raise CreateOutcomeUnknown(f"create {label!r}: outcome unknown ({why}) and no instance with that label "
                                   f"after {self.reconcile_checks} checks", label=label)

    async def show(self, instance_id: int) -> dict[str, Any]:
        """Read one instance (``GET /api/v0/instances/{id}/``).

        Raises:
            InstanceNotFound: unknown or destroyed (Vast answers ``{"instances": null}``).
        """
        response = await self._request("GET", f"/instances/{int(instance_id)}/", idempotent=True,
                                       params={"owner": "me"})
        if response.status_code == 404:
            raise InstanceNotFound(f"instance {instance_id} not found", status=404, body=_body(response))
        if response.status_code >= 400:
            raise self._fail(response, f"show instance {instance_id}")
        body = _body(response)
        row = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(row, dict):
            raise InstanceNotFound(f"instance {instance_id} not found", status=response.status_code, body=body)
        return row

    async def list_instances(self, *, label: str | None = None) -> list[dict[str, Any]]:
        """Every instance of the account, or those with ``label`` (``GET /api/v1/instances/``,
        following ``next_token`` pages of 25)."""
        params: dict[str, Any] = {
            "select_filters": json.dumps({"label": {"eq": label}} if label is not None else {}),
            "order_by": json.dumps([{"col": "id", "dir": "asc"}]),
            "limit": 25,
        }
        rows: list[dict[str, Any]] = []
        for _ in range(10_000):
            data = await self._json("GET", "/api/v1/instances/", "list instances", params=params)
            rows.extend(r for r in data.get("instances") or [] if isinstance(r, dict))
            token = data.get("next_token")
            if not token:
                return rows
            params["after_token"] = token
        raise VastError("list instances: too many pages")

    async def set_state(self, instance_id: int, state: str) -> None:
        """Stop (``"stopped"``: the main process gets SIGTERM) or restart (``"running"``) an
        instance (``PUT /api/v0/instances/{id}/``). Idempotent, so retried like a read."""
        response = await self._request("PUT", f"/instances/{int(instance_id)}/", idempotent=True,
                                       body={"state": state})
        if response.status_code == 404:
            raise InstanceNotFound(f"instance {instance_id} not found", status=404, body=_body(response))
        if response.status_code >= 400:
            raise self._fail(response, f"set instance {instance_id} to {state}")

    async def destroy(self, instance_id: int) -> None:
        """Destroy an instance (``DELETE /api/v0/instances/{id}/``). Destroying an instance that
        is already gone succeeds."""
        response = await self._request("DELETE", f"/instances/{int(instance_id)}/", idempotent=True, body={})
        body = _body(response)
        code = body.get("error") if isinstance(body, dict) else None
        if response.status_code == 404 or code in ("no_such_instance", "not_found"):
            return
        if response.status_code >= 400:
            raise self._fail(response, f"destroy instance {instance_id}")

    async def logs(self, instance_id: int, *, tail: int = 1000, poll_s: float = 0.3, polls: int = 30) -> str:
        """The last ``tail`` lines of an instance's output (``request_logs``, then the
        ``result_url`` it names, fetched without the API key until it is ready)."""
        data = await self._json("PUT", f"/instances/request_logs/{int(instance_id)}/", "request logs",
                                body={"tail": str(tail)})
        url = data.get("result_url")
        if not url:
            raise VastError("request logs: no result_url in the answer", body=data)
        async with httpx.AsyncClient(timeout=self._http.timeout) as plain:
            for _ in range(polls):
                try:
                    response = await plain.get(url)
                    if response.status_code == 200:
                        return response.text
                except httpx.TransportError:
                    pass
                await asyncio.sleep(poll_s)
        raise VastError(f"logs of instance {instance_id} not ready after {polls * poll_s:g}s")

    # ------------------------------------------------------------------ volumes

    async def search_volumes(self, filters: Mapping[str, Mapping[str, Any]] | None = None, *,
                             limit: int | None = None) -> list[dict[str, Any]]:
        """Volume offers (``POST /api/v0/volumes/search/``), cheapest storage first.

        ``filters`` use the offer syntax (``{"machine_id": {"eq": 123}}``) and add to the
        defaults ``verified``, not ``external``, ``disk_space >= 1``.
        """
        body: dict[str, Any] = {"verified": {"eq": True}, "external": {"eq": False}, "disk_space": {"gte": 1}}
        body.update({k: dict(v) for k, v in (filters or {}).items()})
        body["order"] = [["storage_cost", "asc"]]
        if limit is not None:
            body["limit"] = int(limit)
        data = await self._json("POST", "/volumes/search/", "search volumes", body=body)
        return [r for r in data.get("offers") or [] if isinstance(r, dict)]

    async def create_volume(self, volume_offer_id: int, *, size_gb: int, name: str) -> int:
        """Create a volume on the machine of a volume offer (``PUT /api/v0/volumes/``); returns
        its id. ``name`` (letters, digits, ``_``; at most 64) must be unique: a create whose
        answer is lost is found again by it, never re-sent.

        Raises:
            CreateOutcomeUnknown: the answer was lost and no volume with ``name`` was found.
        """
        body = {"id": int(volume_offer_id), "size": int(size_gb), "name": name}
        try:
            response = await self._request("PUT", "/volumes/", idempotent=False, body=body)
        except httpx.TransportError as e:
            response, why = None, f"{type(e).__name__}: {e}"
        else:
            why = f"HTTP {response.status_code}"
        if response is not None and response.status_code < 500:
            answer = _body(response)
            if response.status_code >= 400 or not isinstance(answer, dict):
                raise self._fail(response, f"create volume on offer {volume_offer_id}")
            if answer.get("volume_id") is not None:
                return int(answer["volume_id"])
            match = re.fullmatch(r"V\.(\d+)", str(answer.get("volume_name", "")))
            if match:
                return int(match.group(1))
            why = "no volume id in the answer"
        found = [v for v in await self.list_volumes() if v.get("label") == name]
        if found:
            return max(int(v["id"]) for v in found)
        raise CreateOutcomeUnknown(f"create volume {name!r}: outcome unknown ({why})", label=name)

    async def list_volumes(self) -> list[dict[str, Any]]:
        """The account's volumes (``GET /api/v0/volumes?owner=me&type=all_volume``)."""
        data = await self._json("GET", "/volumes", "list volumes", params={"owner": "me", "type": "all_volume"})
        return [v for v in data.get("volumes") or [] if isinstance(v, dict)]

    async def delete_volume(self, volume_id: int) -> None:
        """Delete a volume (``DELETE /api/v0/volumes/?id=``); a volume already gone succeeds.
        A volume still attached to an instance is refused (:class:`VastError`)."""
        response = await self._request("DELETE", "/volumes/", idempotent=True, params={"id": int(volume_id)})
        body = _body(response)
        if response.status_code == 404 or (isinstance(body, dict) and body.get("error") == "no_such_volume"):
            return
        if response.status_code >= 400:
            raise self._fail(response, f"delete volume {volume_id}")


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _default_violated(body: Mapping[str, Any], row: Mapping[str, Any]) -> str | None:
    """Why an offer breaks an availability default or the disk size the search sent, if it does."""
    for name in _BOOL_DEFAULTS:
        want = body.get(name, {}).get("eq") if isinstance(body.get(name), dict) else None
        have = row.get(name)
        if want is not None and have is not None and bool(have) != want:
            return f"{name} is {have!r}, the search asked for {want!r}"
    want = body.get("verified", {}).get("eq") if isinstance(body.get("verified"), dict) else None
    if want is not None and row.get("verification") is not None:
        if (row["verification"] == "verified") != want:
            return f"verification is {row['verification']!r}, the search asked for verified={want!r}"
    disk = body.get("allocated_storage")
    if disk is not None and isinstance(row.get("disk_space"), (int, float)) and row["disk_space"] < disk:
        return f"disk_space is {row['disk_space']} GB, the search asked for {disk:g} GB"
    return None


EventHook = Callable[[str, dict[str, Any]], "Awaitable[None] | None"]


async def provision(client: VastClient, ranked_offers: Iterable[Offer], *, image: str, env: Mapping[str, str],
                    onstart: str, disk_gb: float, label: str, ready_timeout_s: float,
                    on_event: EventHook | None = None, poll_interval_s: float = 2.0,
                    runtype: str = "args", max_offers: int | None = None,
                    volume: Callable[[Offer], Mapping[str, Any] | None] | None = None) -> tuple[int, Offer]:
    """Rent the first offer of ``ranked_offers`` that reaches ``running``.

    For each offer in order: create an instance; on :class:`OfferGone` (or another refusal,
    or a create whose outcome stays unknown) go to the next offer; otherwise poll the
    instance until it is ``running``. An instance that leaves ``loading`` for a failed state
    (``exited``, ``offline``, ...) or is not running after ``ready_timeout_s`` is destroyed and
    the next offer tried. An instance whose image cannot be pulled (:data:`PULL_ERROR` in its
    ``status_msg``) is destroyed and provisioning stops at once (``ProvisionFailed.permanent``).
    Once one runs, any other instance carrying ``label`` (a lost create that appeared late) is
    destroyed.

    ``on_event(kind, data)`` (sync or async) is told every step; ``data`` is JSON-able and
    never holds ``env``. Kinds: ``create`` (offer_id), ``offer_gone``, ``create_failed``
    (reason), ``created`` (instance_id, dph_total), ``status`` (actual_status, status_msg),
    ``not_ready`` (reason, permanent), ``destroyed`` (rented_s, cost_usd: from the create to the
    destroy, at the offer's ``dph_total``), ``running`` (loading_s), ``stray_destroyed``,
    ``failed`` (attempts, permanent), ``destroy_failed`` (reason) when a destroy is still refused
    after the client's retries (the label sweeps at the end, and the caller's release, try again).

    Args:
        client: the client.
        ranked_offers: offers best first (e.g. :func:`~apothic.placement.rank` of a search).
        image, env, onstart, disk_gb, runtype: as :meth:`VastClient.create`.
        label: unique to this rental; every attempt uses it.
        ready_timeout_s: seconds one instance may take from create to ``running``.
        on_event: progress hook; an exception it raises stops provisioning (after cleanup).
        poll_interval_s: seconds between reads of the instance.
        max_offers: try at most this many offers (all when None).
        volume: the ``volume_info`` (create or attach a local volume) for an offer, or None.

    Returns:
        ``(instance_id, offer)`` of the running instance.

    Raises:
        ProvisionFailed: no offer gave a running instance; ``attempts`` says why, ``permanent``
            whether the failure would repeat on any other offer.
        VastAuthError, VastRateLimited: not specific to an offer, so not tried further.

    On any exception or cancellation, the instances this call created are destroyed.
    """
    async def emit(kind: str, data: dict[str, Any]) -> None:
        if on_event is not None:
            result = on_event(kind, data)
            if inspect.isawaitable(result):
                await result

    attempts: list[ProvisionAttempt] = []
    loop = asyncio.get_running_loop()
    permanent = False
    offers = list(ranked_offers)
    if max_offers is not None:
        offers = offers[:max_offers]
    try:
        for offer in offers:
            base = {"offer_id": offer.offer_id, "label": label}
            await emit("create", {**base, "gpu_name": offer.gpu_name, "num_gpus": offer.num_gpus,
                                  "dph_total": offer.dph_total, "geolocation": offer.geolocation})
            try:
                instance_id = await client.create(offer.offer_id, image=image, env=env, onstart=onstart,
                                                  disk_gb=disk_gb, label=label, runtype=runtype,
                                                  volume=volume(offer) if volume is not None else None)
            except OfferGone as e:
                why = " ".join(str(x) for x in (e.status, e.code) if x)
                attempts.append(ProvisionAttempt(offer, f"offer gone ({why})"))
                await emit("offer_gone", {**base, "status": e.status})
                continue
            except (VastAuthError, VastRateLimited):
                raise
            except VastError as e:
                attempts.append(ProvisionAttempt(offer, f"create failed: {e}"))
                await emit("create_failed", {**base, "reason": str(e)})
                continue
            created_at = loop.time()
            await emit("created", {**base, "instance_id": instance_id, "dph_total": offer.dph_total})
            reason, permanent = await _wait_running(client, instance_id, ready_timeout_s, poll_interval_s,
                                                    lambda kind, data: emit(kind, {**base, **data}))
            if reason is None:
                await emit("running", {**base, "instance_id": instance_id,
                                       "loading_s": round(loop.time() - created_at, 3)})
                await _sweep(client, label, keep=instance_id, emit=emit)
                return instance_id, offer
            await emit("not_ready", {**base, "instance_id": instance_id, "reason": reason, "permanent": permanent})
            try:
                await client.destroy(instance_id)
            except VastError as e:  # still refused after the client's retries: the label sweeps retry it
                if isinstance(e, VastAuthError):
                    raise
                _log.warning("vast: destroying instance %s failed (%s); it is swept by its label", instance_id, e)
                await emit("destroy_failed", {**base, "instance_id": instance_id, "reason": str(e)})
            else:
                await emit("destroyed", {**base, "instance_id": instance_id,
                                         **rented_cost(loop.time() - created_at, offer.dph_total)})
            attempts.append(ProvisionAttempt(offer, reason, instance_id))
            if permanent:
                break
    except BaseException:
        await asyncio.shield(_sweep(client, label, keep=None, emit=None))
        raise
    await _sweep(client, label, keep=None, emit=emit)
    if not offers:
        failure = ProvisionFailed([], "no Vast offer to provision", permanent=True)
    elif permanent:
        failure = ProvisionFailed(attempts, "the image cannot be pulled, so no other offer was tried: "
                                  f"{attempts[-1]}", permanent=True)
    else:
        failure = ProvisionFailed(attempts)
    await emit("failed", {"label": label, "attempts": [str(a) for a in attempts], "permanent": failure.permanent})
    raise failure


async def _wait_running(client: VastClient, instance_id: int, timeout_s: float, interval_s: float,
                        emit: Callable[[str, dict[str, Any]], Awaitable[None]]) -> tuple[str | None, bool]:
    """``(None, False)`` once the instance runs, else why it will not and whether another
    offer would fail the same way (its image cannot be pulled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: Any = ()
    missing = 0
    while True:
        try:
            row: dict[str, Any] | None = await client.show(instance_id)
            missing = 0
        except InstanceNotFound:
            row, missing = None, missing + 1
            if missing >= 3:
                return "the instance disappeared", False
        except (VastRateLimited, VastError) as e:
            if isinstance(e, VastAuthError):
                raise
            row = None  # a transient read failure: skip this tick
        if row is not None:
            status, msg = row.get("actual_status"), row.get("status_msg") or ""
            if status != last:
                await emit("status", {"instance_id": instance_id, "actual_status": status, "status_msg": msg})
                last = status
            if status == "running":
                return None, False
            if PULL_ERROR.search(msg):
                return f"pulling the image failed (instance {status}): {msg}", True
            if status in FAILED_STATUSES or (status == "created" and "error" in msg.lower()):
                return f"instance {status} before running" + (f": {msg}" if msg else ""), False
        remaining = deadline - loop.time()
        if remaining <= 0:
            return f"not running after {timeout_s:g}s (last status {last if last != () else None!r})", False
        await asyncio.sleep(min(interval_s, remaining))


async def _sweep(client: VastClient, label: str, *, keep: int | None,
                 emit: Callable[[str, dict[str, Any]], Awaitable[None]] | None) -> None:
    """Destroy every instance labelled ``label`` except ``keep``; errors are logged, not raised."""
    try:
        strays = [int(i["id"]) for i in await client.list_instances(label=label) if int(i["id"]) != keep]
        for instance_id in strays:
            await client.destroy(instance_id)
            if emit is not None:
                await emit("stray_destroyed", {"label": label, "instance_id": instance_id})
    except VastError as e:
        _log.error("vast: could not sweep instances labelled %r: %s", label, e)
