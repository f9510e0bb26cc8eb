"""LivWorkflow: one function's implementation, generated from its stub at deploy.

1. ``apothic.liv_lookup``: the model in force and the cache key; a cached generation ends here
   (no model is asked).
2. Rounds, at most ``LivRequest.rounds``: ``apothic.liv_generate`` asks the model (an activity:
   retried on 429, 5xx and lost connections, with a timeout) and checks the code in its answer
   without running it. With ``self_debug`` the code is deployed as a candidate app
   (``apothic.liv_stage``) and each example runs as a real job of it (an ``InvocationWorkflow``
   child, in the function's own image and container), which checks the result there. What
   failed (the answer's problem; each failed example's error, traceback and output) goes back
   to the model as the next round's message.
3. The candidate app is removed (``apothic.liv_unstage``), whatever happened; a passing answer
   is kept (``apothic.liv_store``) and returned. After the last round the workflow fails
   (``LivGenerationFailed``) with the last problem and the last code.

The UI shows each round in the workflow's current details and its activities' summaries; the
query ``progress`` returns them. The model's API key is never an argument or a result here:
the activity reads it from the control worker's environment.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
)
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

from apothic._contracts import (
    INVOCATION_WORKFLOW,
    LIV_GENERATE_ACTIVITY,
    LIV_LOOKUP_ACTIVITY,
    LIV_STAGE_ACTIVITY,
    LIV_STORE_ACTIVITY,
    LIV_UNSTAGE_ACTIVITY,
    LIV_WORKFLOW,
    SEARCH_ATTR_APP,
    SEARCH_ATTR_FUNCTION,
    Deployment,
    InvocationInput,
    InvocationResult,
    LivAnswer,
    LivExample,
    LivGenerateInput,
    LivLookup,
    LivLookupResult,
    LivMessage,
    LivProgress,
    LivRecord,
    LivRequest,
    LivResult,
    LivRound,
    LivStageInput,
    LivStoreInput,
)

# The model call: retried on rate limits, server errors and lost connections (the activity
# marks every other failure non-retryable), with a growing wait.
MODEL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                          maximum_interval=timedelta(seconds=30), maximum_attempts=5)
# The model call heartbeats every 2 s: a control worker lost during it is noticed this soon.
HEARTBEAT_TIMEOUT = timedelta(seconds=10)
QUICK_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
# Failures of an example's job that are not the code's: they end the generation as they are.
NOT_THE_CODE = frozenset({"PlacementError", "ContainerLost", "NotFound", "RemoteError", "apothic.InvalidInput",
                          "apothic.MountSyncFailed", "apothic.NotRun"})
EXAMPLE_FAILED = "apothic._liv._frozen.LivExampleFailed"
# How much of each failed example's traceback and output the model is shown.
TRACEBACK_CHARS = 3000
LOGS_CHARS = 1500
_APP_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTR_APP)
_FN_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTR_FUNCTION)


def candidate_app(req: LivRequest) -> str:
    """The app this generation's candidates are deployed as, one version per round."""
    return f"liv-{req.key[:20]}"


@workflow.defn(name=LIV_WORKFLOW)
class LivWorkflow:
    @workflow.init
    def __init__(self, req: LivRequest) -> None:
        self.req = req
        self.status = "starting"
        self.model = req.model
        self.rounds: list[LivRound] = []

    @workflow.query
    def progress(self) -> LivProgress:
        return LivProgress(status=self.status, model=self.model, rounds=list(self.rounds))

    def _show(self, status: str) -> None:
        self.status = status
        lines = [f"**{self.req.app}.{self.req.function}**: {status}" + (f" (model {self.model})" if self.model else "")]
        for r in self.rounds:
            lines.append(f"- round {r.round}: {r.outcome}" + (f": {r.problem.splitlines()[0][:200]}" if r.problem else ""))
        workflow.set_current_details("\n".join(lines))

    @workflow.run
    async def run(self, req: LivRequest) -> LivResult:
        self._show("looking up the cache")
        try:
            look: LivLookupResult = await workflow.execute_activity(
                LIV_LOOKUP_ACTIVITY, LivLookup(app=req.app, function=req.function, key=req.key, scope=req.scope,
                                               model=req.model),
                result_type=LivLookupResult, start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK_RETRY,
                summary="cache lookup",
            )
        except ActivityError as e:
            raise self._failed(e, "LivNotConfigured") from None
        self.model = look.model
        if look.record is not None:
            self._show("taken from the cache")
            return LivResult(record=dataclasses.replace(look.record, cache_hit=True))
        staged = False
        try:
            messages = [LivMessage("system", req.system), LivMessage("user", req.prompt)]
            last = LivAnswer(content="", source="")
            for n in range(1, req.rounds + 1):
                self._show(f"round {n}: asking the model")
                last = await self._ask(req, look, messages, n)
                if last.problem:
                    self._round(n, "invalid answer", last.problem, last.source)
                    messages += [LivMessage("assistant", last.content), LivMessage("user", feedback([last.problem]))]
                    continue
                failures: list[str] = []
                if req.self_debug and req.examples:
                    self._show(f"round {n}: running {len(req.examples)} example(s)")
                    staged = True
                    try:
                        dep: Deployment = await workflow.execute_activity(
                            LIV_STAGE_ACTIVITY,
                            LivStageInput(app=candidate_app(req), origin=f"{req.app}.{req.function}", spec=req.spec,
                                          stub_code=req.stub_code, source=last.source, round=n),
                            result_type=Deployment, start_to_close_timeout=timedelta(seconds=120),
                            retry_policy=QUICK_RETRY, summary=f"round {n}: deploy the candidate",
                        )
                    except ActivityError as e:
                        raise self._failed(e, "LivExamplesNotRun", f"round {n}: the candidate could not be deployed: ") \
                            from None
                    results = await asyncio.gather(*(self._example(dep, n, i, ex) for i, ex in enumerate(req.examples)))
                    failures = [f for f in results if f]
                if failures:
                    self._round(n, "examples failed", "\n\n".join(failures), last.source)
                    messages += [LivMessage("assistant", last.content), LivMessage("user", feedback(failures))]
                    continue
                self._round(n, "passed", "", last.source)
                return await self._finish(req, look, last.source, n)
            problem = self.rounds[-1].problem if self.rounds else "no answer"
            self._show(f"failed after {req.rounds} round(s)")
            code = f"\n--- the code of round {req.rounds} ---\n{last.source.rstrip()}" if last.source else ""
            raise ApplicationError(
                f"the model's answers still failed after {req.rounds} round(s); the last one: {problem}{code}\n"
                "Fix: say more in the docstring, give examples with expected results, allow more rounds "
                "(LivConfig(rounds=...)), or write the body yourself.",
                {"source": last.source, "rounds": len(self.rounds)}, type="LivGenerationFailed", non_retryable=True)
        finally:
            if staged:
                await workflow.execute_activity(
                    LIV_UNSTAGE_ACTIVITY, candidate_app(req), start_to_close_timeout=timedelta(seconds=60),
                    retry_policy=QUICK_RETRY, summary="remove the candidate",
                )

    async def _finish(self, req: LivRequest, look: LivLookupResult, source: str, n: int) -> LivResult:
        record = LivRecord(
            source=source, model=look.model, round=n, rounds=req.rounds, generated_at=workflow.now().isoformat(),
            app=req.app, function=req.function, key=look.key, scope=req.scope,
            workflow_id=workflow.info().workflow_id, self_debug=req.self_debug,
            examples_run=len(req.examples) if req.self_debug else 0,
        )
        if req.scope != "none":
            await workflow.execute_activity(
                LIV_STORE_ACTIVITY, LivStoreInput(scope=req.scope, app=req.app, record=record),
                start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK_RETRY, summary=f"cache ({req.scope})",
            )
        self._show(f"generated in round {n}")
        return LivResult(record=record, rounds=list(self.rounds))

    def _round(self, n: int, outcome: str, problem: str, source: str) -> None:
        self.rounds.append(LivRound(round=n, outcome=outcome, problem=problem, source=source))
        self._show(f"round {n}: {outcome}")

    async def _ask(self, req: LivRequest, look: LivLookupResult, messages: list[LivMessage], n: int) -> LivAnswer:
        try:
            return await workflow.execute_activity(
                LIV_GENERATE_ACTIVITY,
                LivGenerateInput(model=look.model, messages=list(messages), function=req.function,
                                 signature=req.signature, is_async=req.is_async, round=n),
                result_type=LivAnswer, start_to_close_timeout=timedelta(seconds=look.timeout_s + 15),
                heartbeat_timeout=HEARTBEAT_TIMEOUT, retry_policy=MODEL_RETRY, summary=f"round {n}: ask {look.model}",
            )
        except ActivityError as e:
            self._show(f"round {n}: the model call failed")
            raise self._failed(e, "LivModelError", f"round {n}: ") from None

    def _failed(self, e: ActivityError, kind: str, prefix: str = "") -> ApplicationError:
        """The generation's failure for a failed activity: its message, without Temporal's wrapping."""
        cause = e.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause or e)
        return ApplicationError(f"{prefix}{message}", {"source": "", "rounds": len(self.rounds)}, type=kind,
                                non_retryable=True)

    async def _example(self, dep: Deployment, n: int, i: int, ex: LivExample) -> str:
        """Run example ``i`` as a job of the candidate: "" when it passed, else what the model is told."""
        job_id = f"job-{workflow.uuid4().hex[:20]}"
        try:
            await workflow.execute_child_workflow(
                INVOCATION_WORKFLOW,
                InvocationInput(job_id=job_id, app=dep.app, function=dep.function, args=ex.args, version=dep.version,
                                submitted_at=workflow.now().isoformat(), deployment=dep, demand_now=True),
                id=job_id, task_queue=workflow.info().task_queue, result_type=InvocationResult,
                search_attributes=TypedSearchAttributes([SearchAttributePair(_APP_KEY, dep.app),
                                                         SearchAttributePair(_FN_KEY, dep.function)]),
                static_summary=f"round {n}: example {i + 1} of {self.req.app}.{self.req.function}",
            )
            return ""
        except ChildWorkflowError as e:
            cause = e.cause
            if not isinstance(cause, ApplicationError) or cause.type in NOT_THE_CODE:
                what = f"{cause.type}: {cause.message}" if isinstance(cause, ApplicationError) else str(cause or e)
                raise ApplicationError(
                    f"example {i + 1} ({ex.call}) could not run as a job of the candidate (job {job_id}): {what}",
                    {"source": "", "rounds": len(self.rounds)}, type="LivExamplesNotRun", non_retryable=True,
                ) from None
            return example_feedback(i, ex, cause)


def example_feedback(i: int, ex: LivExample, cause: ApplicationError) -> str:
    """What the model is told of a failed example: its call, the error, traceback and output."""
    detail = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
    if cause.type == EXAMPLE_FAILED:
        return cause.message.removeprefix("LivExampleFailed: ")
    text = f"example {i + 1}: {ex.call}" + (f" (expected {ex.expected})" if ex.expected else "")
    if cause.type == "FunctionTimeoutError":
        text += f" did not finish: {cause.message}"
    else:
        text += f" raised {cause.message}"
    tb = str(detail.get("traceback") or "").strip()
    if tb:
        text += "\n" + (tb if len(tb) <= TRACEBACK_CHARS else "..." + tb[-TRACEBACK_CHARS:])
    logs = str(detail.get("logs") or "").strip()
    if logs:
        text += "\nIt printed:\n" + (logs if len(logs) <= LOGS_CHARS else "..." + logs[-LOGS_CHARS:])
    return text


def feedback(problems: list[str]) -> str:
    return ("Your code was checked and failed:\n\n" + "\n\n".join(problems) +
            "\n\nWrite the corrected complete function again, in one ```python code block, with exactly the "
            "stub's signature.")
