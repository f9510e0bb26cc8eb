"""Activities of generated functions (``LivWorkflow``): the cache, the model, the candidate app.

The model is any server of OpenAI's chat-completions protocol: ``POST <base_url>/chat/completions``
with ``{"model", "messages", "temperature": 0}`` and ``Authorization: Bearer <key>``; the answer
is ``choices[0].message.content``. The base URL and the model come from the control worker's
settings (``liv`` section, ``APOTHIC_LIV_BASE_URL``/``APOTHIC_LIV_MODEL``), the key from its
environment (``APOTHIC_LIV_API_KEY``) when the call is made: it is never an argument, a result or
part of an error, and whatever the server sends back (answers, error bodies) has it blanked out.

Failures: a 429 (waiting ``Retry-After`` when given), a 5xx, a lost connection or a timeout are
retried by the workflow's policy; a refused key (401/403), an unknown model or path (404), any
other 4xx and an answer that is not a chat completion are final, each with the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from temporalio import activity
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from apothic._contracts import (
    APP_WORKFLOW,
    LIV_GENERATE_ACTIVITY,
    LIV_LOOKUP_ACTIVITY,
    LIV_STAGE_ACTIVITY,
    LIV_STORE_ACTIVITY,
    LIV_UNSTAGE_ACTIVITY,
    AppState,
    DeployFunction,
    Deployment,
    DeployRequest,
    DeployResult,
    LivAnswer,
    LivGenerateInput,
    LivLookup,
    LivLookupResult,
    LivStageInput,
    LivStoreInput,
    RetrySpec,
    app_workflow_id,
    make_deployment,
)
from apothic._control._config import Settings
from apothic._liv._cache import read_entry, write_entry
from apothic._liv._check import check_answer
from apothic._liv._frozen import LivCode, filename_for
from apothic._secrets._store import redact

from ._hosts import heartbeating

API_KEY_ENV = "APOTHIC_LIV_API_KEY"
MAX_ANSWER_CHARS = 128 * 1024
_BODY_SHOWN = 300


def _api_key() -> str:
    return os.environ.get(API_KEY_ENV, "").strip()


def _scrub(text: str) -> str:
    key = _api_key()
    return redact(text, [key]) if key else text


def _where(base_url: str) -> str:
    """The endpoint without credentials or query (for messages)."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def final_key(client_key: str, model: str) -> str:
    """The cache key: the client's digest of the stub and examples, and the model."""
    return hashlib.sha256(f"{client_key}\0{model}".encode()).hexdigest()


class LivActivities:
    """The activities of generated functions, bound to the control worker's settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def all(self) -> list[Any]:
        return [self.lookup, self.generate, self.stage, self.unstage, self.store]

    def _not_configured(self, what: str) -> ApplicationError:
        cfg = self.settings.config_file or "temporal-dev.yaml"
        return ApplicationError(
            f"no model is configured on the control worker: {what}. Fix: run the control worker with "
            "APOTHIC_LIV_BASE_URL=<an OpenAI-compatible API, e.g. https://api.openai.com/v1>, APOTHIC_LIV_MODEL=<model> "
            f"and {API_KEY_ENV}=<key> in its environment (or liv.base_url and liv.model in {cfg}), e.g. `apothic stop`, "
            "then deploy again from a shell where they are set; or give LivConfig(model=...); or write the body yourself "
            "and remove @apothic.liv",
            type="LivNotConfigured", non_retryable=True,
        )

    @activity.defn(name=LIV_LOOKUP_ACTIVITY)
    async def lookup(self, req: LivLookup) -> LivLookupResult:
        """The model in force, the final cache key and the cached generation, if any."""
        liv = self.settings.liv
        model = req.model or liv.model
        if not model:
            raise self._not_configured("APOTHIC_LIV_MODEL is not set and LivConfig(model=...) names none")
        key = final_key(req.key, model)
        record = read_entry(req.scope, req.app, key)
        if record is None and not liv.base_url:
            raise self._not_configured("APOTHIC_LIV_BASE_URL (liv.base_url) is not set")
        return LivLookupResult(model=model, key=key, timeout_s=liv.timeout_s, record=record)

    @activity.defn(name=LIV_GENERATE_ACTIVITY)
    async def generate(self, inp: LivGenerateInput) -> LivAnswer:
        """Ask the model once; check the code in its answer (without running it)."""
        liv = self.settings.liv
        if not liv.base_url:
            raise self._not_configured("APOTHIC_LIV_BASE_URL (liv.base_url) is not set")
        where = _where(liv.base_url)
        url = liv.base_url.rstrip("/") + "/chat/completions"
        body = {"model": inp.model, "temperature": 0,
                "messages": [{"role": m.role, "content": m.content} for m in inp.messages]}
        headers = {"Accept": "application/json"}
        if _api_key():
            headers["Authorization"] = f"Bearer {_api_key()}"
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(liv.timeout_s, connect=min(10.0, liv.timeout_s)),
                                         trust_env=False) as client:
                # Heartbeats while the model thinks: a lost worker is noticed in seconds, not at the timeout.
                response = await heartbeating(client.post(url, json=body, headers=headers), activity.heartbeat)
        except httpx.TimeoutException:
            raise ApplicationError(
                f"the model at {where} did not answer within {liv.timeout_s:g} s. Fix: raise liv.timeout_s "
                "(APOTHIC_LIV_TIMEOUT_S) on the control worker, or use a faster model", type="LivModelTimeout",
            ) from None
        except httpx.HTTPError as e:
            raise ApplicationError(
                f"cannot reach the model at {where}: {type(e).__name__}: {_scrub(str(e)) or 'no answer'}. Fix: check "
                "APOTHIC_LIV_BASE_URL (liv.base_url) on the control worker and that the server runs",
                type="LivModelUnreachable",
            ) from None
        self._raise_for_status(response, where, inp.model)
        content, served, finish = self._content(response, where)
        source, problem = check_answer(content, inp.function, inp.signature)
        return LivAnswer(content=content, source=source, problem=problem, model=served, finish_reason=finish)

    def _raise_for_status(self, response: httpx.Response, where: str, model: str) -> None:
        status = response.status_code
        if status < 400:
            return
        text = _scrub(response.text.strip())
        said = f": {text[:_BODY_SHOWN]}" if text else ""
        if status == 429:
            wait = response.headers.get("retry-after", "")
            delay = timedelta(seconds=min(float(wait), 120.0)) if wait.replace(".", "", 1).isdigit() else None
            raise ApplicationError(f"the model at {where} is rate limited (429){said}", type="LivRateLimited",
                                   next_retry_delay=delay)
        if status >= 500:
            raise ApplicationError(f"the model server at {where} failed ({status}){said}", type="LivServerError")
        if status in (401, 403):
            fix = f"set {API_KEY_ENV} to a valid key in the control worker's environment and restart it"
            what = "refused the API key" if _api_key() else f"needs an API key and {API_KEY_ENV} is not set"
            raise ApplicationError(f"the model at {where} {what} ({status}){said}. Fix: {fix}",
                                   type="LivRefused", non_retryable=True)
        if status == 404:
            raise ApplicationError(
                f"the model at {where} answered 404 for model {model!r}{said}. Fix: check the model name "
                "(APOTHIC_LIV_MODEL or LivConfig(model=...)) and that the base URL ends where /chat/completions "
                "is served (usually .../v1)", type="LivRefused", non_retryable=True)
        raise ApplicationError(f"the model at {where} refused the request ({status}){said}", type="LivRefused",
                               non_retryable=True)

    def _content(self, response: httpx.Response, where: str) -> tuple[str, str, str]:
        """``(content, model, finish_reason)`` of a chat completion, scrubbed of the API key."""
        try:
            data = response.json()
            choice = data["choices"][0]
            content = choice["message"]["content"]
            if not isinstance(content, str):
                raise TypeError("content is not text")
        except (ValueError, KeyError, IndexError, TypeError) as e:
            shown = _scrub(response.text[:_BODY_SHOWN])
            raise ApplicationError(
                f"the model at {where} sent something that is not a chat completion ({type(e).__name__}: "
                f"{_scrub(str(e))}): {shown!r}. Fix: point APOTHIC_LIV_BASE_URL at an OpenAI-compatible API "
                "(POST .../chat/completions)", type="LivBadResponse", non_retryable=True,
            ) from None
        served = data.get("model") if isinstance(data.get("model"), str) else ""
        finish = choice.get("finish_reason") if isinstance(choice.get("finish_reason"), str) else ""
        return _scrub(content)[:MAX_ANSWER_CHARS], _scrub(served or ""), finish or ""

    @activity.defn(name=LIV_STAGE_ACTIVITY)
    async def stage(self, inp: LivStageInput) -> Deployment:
        """Deploy ``inp.source`` as a new version of the candidate app; its examples' jobs check results."""
        spec = dataclasses.replace(inp.spec, schedule=None, retry=RetrySpec(),
                                   max_pending_tasks=max(inp.spec.max_pending_tasks, 100))
        code = LivCode(stub=inp.stub_code.raw(), source=inp.source, function=spec.name,
                       filename=filename_for(inp.origin.removesuffix(f".{spec.name}"), spec.name),
                       check=True).pickled(spec.qualname)
        digest = hashlib.sha256(f"{inp.stub_code.sha256}\0{inp.source}\0{spec}".encode()).hexdigest()
        req = DeployRequest(app=inp.app, functions=[DeployFunction(spec=spec, code=code)], code_hash=digest,
                            client=f"liv round {inp.round}")
        start = WithStartWorkflowOperation(
            APP_WORKFLOW, AppState(app=inp.app), id=app_workflow_id(inp.app),
            task_queue=self.settings.worker.control_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING, static_summary=f"liv candidates of {inp.origin}",
        )
        res: DeployResult = await activity.client().execute_update_with_start_workflow(
            "deploy", req, start_workflow_operation=start, result_type=DeployResult)
        worker = self.settings.worker
        return make_deployment(inp.app, spec, res.version, worker.startup_timeout_s, worker.container_idle_s)

    @activity.defn(name=LIV_UNSTAGE_ACTIVITY)
    async def unstage(self, app: str) -> None:
        """Remove the candidate app: its fleets drain, its registry ends."""
        try:
            await activity.client().get_workflow_handle(app_workflow_id(app)).execute_update("remove", result_type=int)
        except RPCError as e:
            if e.status != RPCStatusCode.NOT_FOUND:  # never deployed, or removed already
                raise

    @activity.defn(name=LIV_STORE_ACTIVITY)
    async def store(self, inp: LivStoreInput) -> None:
        write_entry(inp.scope, inp.app, inp.record)
