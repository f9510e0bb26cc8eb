"""The client's part of deploying ``@apothic.liv`` functions: generate, wait, freeze.

For each such function ``freeze_generated`` starts (or joins) its ``LivWorkflow`` with the stub
(``def`` and docstring), the examples (pickled as the jobs' arguments), the function's spec and
the stub's own pickle, then waits for the generated source. The deploy then ships, instead of
the stub, a ``LivCode`` (``_frozen``) holding the stub's pickle and that source as text; its
digest (stub and source) is the function's part of the version's code hash, so an unchanged
stub taken from the cache redeploys to the same version. Nothing here compiles the source.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import inspect
from typing import Any

from temporalio.client import WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError

from .._contracts import (
    LIV_WORKFLOW,
    LivExample,
    LivRecord,
    LivRequest,
    LivResult,
    liv_workflow_id,
)
from .._control._client import get_client, search_attributes
from .._data._blobs import offload
from .._data._digest import code_digest
from .._data._serialization import CloudPickled
from .._options._problems import show
from ..exceptions import ApothicError, InvalidError, LivError
from ._frozen import LivCode, filename_for
from ._stub import SYSTEM, cache_key, example_call, prompt, signature_of, stub_source
from ._types import describe, return_annotation

_ATTR = "_apothic_liv_frozen"


@dataclasses.dataclass(frozen=True)
class Frozen:
    """A function's generated code as the deploy ships it."""

    code: CloudPickled
    digest: str
    record: LivRecord


def _config(fn: Any) -> Any:
    return getattr(getattr(fn, "options", None), "liv", None)


def frozen_code(fn: Any) -> tuple[CloudPickled, str] | None:
    """The shipped code and its digest for an ``@apothic.liv`` function (None for another)."""
    if _config(fn) is None:
        return None
    frozen: Frozen | None = getattr(fn, _ATTR, None)
    if frozen is None:
        raise InvalidError(
            f"{fn.function_name!r} is generated at deploy (@apothic.liv) and has not been generated yet. "
            "Fix: deploy with app.deploy() (or `apothic deploy`), which generates it first.")
    return frozen.code, frozen.digest


def frozen_record(fn: Any) -> LivRecord | None:
    frozen: Frozen | None = getattr(fn, _ATTR, None)
    return frozen.record if frozen is not None and _config(fn) is not None else None


async def freeze_generated(app: Any) -> None:
    """Generate (or take from the cache) every ``@apothic.liv`` function of ``app``."""
    targets = [fn for fn in app.registered_functions.values() if _config(fn) is not None]
    if targets:
        await asyncio.gather(*(_freeze(app, fn) for fn in targets))


async def _examples(app: Any, fn: Any, cfg: Any) -> list[LivExample]:
    """Each example as the job's arguments ``((index, args, kwargs, has_expected, expected), {})``."""
    out = []
    for i, ex in enumerate(cfg.examples):
        args, kwargs, has = ex[0], ex[1], len(ex) == 3
        expected = ex[2] if has else None
        try:
            packed = CloudPickled.dump(((i, args, kwargs, has, expected), {}), kind="args",
                                       qualname=f"{app.name}.{fn.function_name}")
        except Exception as e:  # noqa: BLE001 - the example's values are the caller's
            raise InvalidError(
                f"@apothic.liv on {fn.function_name!r}: examples[{i}] = {show(ex)} cannot be pickled: {e}. "
                "Fix: give examples of plain data (or objects cloudpickle can serialise).") from None
        packed = await offload(packed, app._cp.settings.blobs)
        out.append(LivExample(call=example_call(fn.function_name, args, kwargs), args=packed,
                              expected=show(expected) if has else ""))
    return out


async def _freeze(app: Any, fn: Any) -> None:
    from .._app import pickle_function

    cfg = _config(fn)
    name = fn.function_name
    stub = fn.raw_f
    source, node = stub_source(stub)
    stub_code, stub_digest = pickle_function(stub)
    examples = await _examples(app, fn, cfg)
    raw_examples = [tuple(ex) for ex in cfg.examples]
    fallback = hashlib.sha256(b"".join(e.args.sha256.encode() for e in examples)).hexdigest()
    key = cache_key(source, stub.__doc__ or "", code_digest(raw_examples, fallback=fallback), cfg.self_debug, cfg.model)
    ret = return_annotation(stub)
    settings = app._cp.settings
    req = LivRequest(
        app=app.name, function=name, key=key, scope=cfg.cache, model=cfg.model or "", rounds=cfg.rounds,
        self_debug=cfg.self_debug, system=SYSTEM,
        prompt=prompt(source, name, [(e.call, e.expected) for e in examples],
                      "" if ret is inspect.Parameter.empty else describe(ret)),
        signature=signature_of(node), is_async=inspect.iscoroutinefunction(stub), examples=examples,
        spec=app._spec(fn), stub_code=stub_code,
    )
    client = await get_client(settings)
    handle = await client.start_workflow(
        LIV_WORKFLOW, req, id=liv_workflow_id(app.name, name, key), task_queue=settings.worker.control_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,  # a deploy of the same stub running: join it
        search_attributes=search_attributes(app.name, name), static_summary=f"generate {app.name}.{name}",
        result_type=LivResult,
    )
    result = await _wait(handle, settings, f"deploying {app.name!r}: generating {name}")
    record = result.record
    code = LivCode(stub=stub_code.raw(), source=record.source, function=name,
                   filename=filename_for(app.name, name)).pickled(stub.__qualname__)
    digest = hashlib.sha256(f"liv\0{stub_digest}\0{record.source}".encode()).hexdigest()
    setattr(fn, _ATTR, Frozen(code=code, digest=digest, record=record))


async def _wait(handle: Any, settings: Any, what: str) -> LivResult:
    """The generation's result; a clear error when it failed or no control worker runs it."""
    from .._app import DEPLOY_TIMEOUT_S

    task = asyncio.ensure_future(handle.result())
    try:
        done, _ = await asyncio.wait({task}, timeout=DEPLOY_TIMEOUT_S)
        if not done:
            desc = await handle.describe()
            if desc.history_length <= 2:  # started, its first task scheduled: no worker took it
                task.cancel()
                raise ApothicError(
                    f"{what}: no control worker answered within {DEPLOY_TIMEOUT_S:g} s on task queue "
                    f"{settings.worker.control_task_queue!r} at {settings.address}. Fix: start one with "
                    "`apothic worker` (or `apothic dev`).")
        return await task
    except WorkflowFailureError as e:
        raise _failure(e, what, handle.id) from None
    finally:
        if not task.done():
            task.cancel()


def _failure(e: WorkflowFailureError, what: str, workflow_id: str) -> LivError:
    cause = e.cause
    if isinstance(cause, ApplicationError):
        detail = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
        return LivError(f"{what}: {cause.message}", code=str(detail.get("source") or ""),
                        rounds=int(detail.get("rounds") or 0), workflow_id=workflow_id)
    if isinstance(cause, (CancelledError, TerminatedError)):
        how = "cancelled" if isinstance(cause, CancelledError) else "terminated"
        return LivError(f"{what}: the generation (workflow {workflow_id}) was {how}. Fix: deploy again.",
                        workflow_id=workflow_id)
    return LivError(f"{what}: the generation (workflow {workflow_id}) failed: {cause or e}", workflow_id=workflow_id)
